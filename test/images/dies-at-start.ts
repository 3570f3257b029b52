// A next image that crashes while loading, before luo's boot: for the successor failure test.
process.stderr.write('dies-at-start: exiting with 3\n');
process.exit(3);
