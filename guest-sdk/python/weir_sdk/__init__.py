"""Weir's Python SDK: write a keyed process function as a WebAssembly
component with componentize-py (see docs/python.md).

    from weir_sdk import Processor, ValueState, export

    class Counter(Processor):
        def open(self, config):
            self.count = ValueState("count")

        def process(self, ctx, event):
            n = self.count.get(0) + 1
            self.count.set(n)
            ctx.emit(str(n))

    Handler = export(Counter)

The contract (wit/weir.wit) hands events over in batches; the SDK calls
`process` once per event with its key in scope and overlays the batch's own
writes, so a read sees what an earlier event of the same batch wrote.
"""

from wit_world.imports.types import TimeDomain

from .context import Context, Event, Level, Timer
from .processor import PluginError, Processor, export
from .state import ListState, MapState, ValueState, decode_stored, encode_stored

__all__ = [
    "Context",
    "Event",
    "Level",
    "ListState",
    "MapState",
    "PluginError",
    "Processor",
    "TimeDomain",
    "Timer",
    "ValueState",
    "decode_stored",
    "encode_stored",
    "export",
]
