/*
 * uapi/trees: the names in the handover trees LUO writes (reference §5.2), which the next
 * image, a guard bringing the previous one back, `luo dump` and dtc users read. Changing one
 * is an ABI break: a changed layout gets a new compatible string.
 *
 *   KHO root / "LUO" subtree: compatible "luo-v1", liveupdate-number (u64), files-checksum
 *     (u32: CRC-32 of the files tree, which the KHO root's checksum of this tree vouches for),
 *     subsystems { compatible "subsystems-v1"; <name> = u64 payload; … },
 *     previous-image { file; argv; env; cwd; nofile = <soft hard> }   (luo: how to run the
 *     image that wrote it, and its fd limit, which a wrapper of the next one may have lowered)
 *   the "file-descriptors" subsystem's payload: a tree "file-descriptors-v1", one node per
 *     token named as %#llx prints it, with compatible, data and fds (luo: the fds it carries)
 */
export const LUO_SUBTREE = 'LUO';
export const LUO_COMPATIBLE = 'luo-v1';
export const SUBSYSTEMS_NODE = 'subsystems';
export const SUBSYSTEMS_COMPATIBLE = 'subsystems-v1';
export const FILES_SUBSYSTEM = 'file-descriptors';
export const FILES_COMPATIBLE = 'file-descriptors-v1';
export const LIVEUPDATE_NUMBER = 'liveupdate-number';
export const FILES_CHECKSUM = 'files-checksum';
/** The LUO tree's record of the image that wrote it (for a guard to bring it back). */
export const PREVIOUS_IMAGE_NODE = 'previous-image';
