// A next image that never gets to luo's boot (it hangs while "loading"): for the successor
// timeout test.
setInterval(() => {}, 1000);
