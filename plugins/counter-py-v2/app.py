"""A test plugin: counter-py with its state in a new format (state version
1: {"n", "migrated"}), and a `migrate` from counter-py's bare numbers."""

from weir_sdk import PluginError, Processor, ValueState, decode_stored, encode_stored, export


class CounterV2(Processor):
    STATE_VERSION = 1

    def open(self, config):
        self.count = ValueState("count")

    def process(self, ctx, event):
        count = self.count.get({"n": 0, "migrated": False})
        count["n"] += 1
        self.count.set(count)
        ctx.emit_json(
            {
                "key": ctx.key.decode(),
                "count": count["n"],
                "seq": event.json()["seq"],
                "migrated": count["migrated"],
            }
        )

    def migrate(self, from_version, state, value):
        if from_version != 0 or state != "count":
            raise PluginError(f"no migration of {state!r} from version {from_version}")
        return encode_stored({"n": decode_stored(value), "migrated": True})


Handler = export(CounterV2)
