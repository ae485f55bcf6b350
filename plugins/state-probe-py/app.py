"""A test plugin: plugins/state-probe in Python. Every event changes value,
map and list state of its key and emits what it then reads back, so a test
sees whether reads observe the writes made earlier in the same batch (the
SDK's overlay) and in earlier batches (the host's state).
"""

from weir_sdk import ListState, MapState, Processor, ValueState, export


class StateProbe(Processor):
    def open(self, config):
        self.count = ValueState("count")
        self.seen = MapState("seen")
        self.history = ListState("history")

    def process(self, ctx, event):
        n = event.json()["n"]
        count = self.count.get(0) + 1
        self.count.set(count)
        self.history.append(n)
        self.seen.put(n % 3, n)
        if n % 5 == 0:
            self.seen.remove(n % 3)
        if n % 7 == 0:
            self.history.clear()
        if n % 11 == 0:
            self.seen.clear()
        ctx.emit_json(
            {
                "n": n,
                "count": count,
                "history": self.history.read(),
                "seen": self.seen.entries(),
                "has_zero": self.seen.contains(0),
            }
        )


Handler = export(StateProbe)
