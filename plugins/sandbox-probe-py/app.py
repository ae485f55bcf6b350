"""A test plugin for the sandbox suite: Python's own way to wait.

`{"action": "sleep"}` sleeps an hour (`time.sleep`) and then emits "slept";
any other event emits "ok". With the config `{"on_open": "sleep"}`, `open`
sleeps an hour first. The host must not let either hold its subtask."""

import time

from weir_sdk import Processor, export

HOUR = 3600


class SandboxProbe(Processor):
    def open(self, config):
        if config.get("on_open") == "sleep":
            time.sleep(HOUR)

    def process(self, ctx, event):
        if event.json().get("action") == "sleep":
            time.sleep(HOUR)
            ctx.emit("slept")
        else:
            ctx.emit("ok")


Handler = export(SandboxProbe)
