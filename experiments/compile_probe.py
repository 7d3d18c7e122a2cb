import importlib
import json
import os
import sys
import tempfile
import time

t0 = time.perf_counter()
import jax  # noqa: E402 - timed from before JAX's import

comp = {"trace": 0.0, "compile": 0.0, "n": 0}


def on(ev, d, **k):
  if ev.endswith("jaxpr_trace_duration"):
    comp["trace"] += d
  if ev.endswith("backend_compile_duration"):
    comp["compile"] += d
    comp["n"] += 1


jax.monitoring.register_event_duration_secs_listener(on)
from hpjax import tuner  # noqa: E402 - after the listener is registered

sys.path.insert(0, os.getcwd())

cfg = importlib.import_module("experiments.configs.digits28_pbt").get_config().to_dict()
cfg.update(epochs=int(sys.argv[1]), report=False, tensorboard=False, progress=False)
for k in ("mode",):
  cfg["controller"].pop(k, None)
wd = tempfile.mkdtemp()
s = tuner.run(cfg, wd, log=lambda x: None)
print(
  json.dumps(
    {
      "tree": os.getcwd(),
      "wall": round(time.perf_counter() - t0, 1),
      "jax_compile": round(comp["compile"], 1),
      "jax_trace": round(comp["trace"], 1),
      "programs": comp["n"],
      "val": s["val"],
    }
  )
)
