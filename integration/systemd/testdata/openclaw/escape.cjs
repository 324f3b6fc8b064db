// Preloaded into the OpenClaw gateway (NODE_OPTIONS=--require FILE): a
// child of the gateway that escapes, as a leaked helper does. It leaves the
// gateway's session (detached: setsid), ignores SIGTERM and holds
// 127.0.0.1:18790 (escapee.py). Only the first node process of a run
// starts one: the gateway's own children inherit REAPER_TEST_ESCAPED.
"use strict";
if (!process.env.REAPER_TEST_ESCAPED) {
  process.env.REAPER_TEST_ESCAPED = "1";
  require("node:child_process")
    .spawn("/usr/bin/python3", ["/opt/reaper-test/escapee.py"], { detached: true, stdio: "ignore" })
    .unref();
}
