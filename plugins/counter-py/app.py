"""A test plugin: counts events per key, storing the count as a bare
number (state version 0), and emits {"key", "count", "seq"}."""

from weir_sdk import Processor, ValueState, export


class Counter(Processor):
    def open(self, config):
        self.count = ValueState("count")

    def process(self, ctx, event):
        count = self.count.get(0) + 1
        self.count.set(count)
        ctx.emit_json({"key": ctx.key.decode(), "count": count, "seq": event.json()["seq"]})


Handler = export(Counter)
