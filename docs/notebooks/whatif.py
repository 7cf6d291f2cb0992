# %% [markdown]
# # A what-if study with the public API, start to finish
#
# A notebook-style script (cells marked `# %%`; Jupyter, VS Code and Spyder open it as a notebook). It uses only
# the public API (`import mscsim`) and runs in the test suite, so every line here works with the mscsim it ships
# with. Run it with `python docs/notebooks/whatif.py [OUTPUT_FOLDER]`.

# %%
import sys
import tempfile
from pathlib import Path

import mscsim

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="mscsim-whatif-"))

# %% [markdown]
# ## 1. A scenario and its evidence
# A bundled knee-osteoarthritis preset: 5e7 bone-marrow MSCs into the knee, ultrasound-guided. Which parameters
# does it rest on, and how good is their evidence?

# %%
sim = mscsim.load("knee_oa_ia_5e7").with_duration(95).with_population(4)
print(sim)
params = sim.parameters()
print(params["grade"].value_counts().to_string())

# %% [markdown]
# ## 2. What if the injection were blind, and the dose ten times smaller?

# %%
blind_low = sim.with_guidance("landmark").with_dose(cells=5e6)
guided = sim.run()
blind = blind_low.run()
for label, res in (("guided, 5e7", guided), ("blind, 5e6", blind)):
    print(label)
    print("\n".join(line for line in res.endpoint_lines() if "pain VAS" in line))

# %% [markdown]
# ## 3. Endpoints as a table and bands as data

# %%
table = guided.endpoints()
print(table[["label", "visit", "statistic", "value_text", "untreated_text"]].to_string(index=False))
bands = guided.bands(["pain_vas"])  # an xarray Dataset with a 'quantile' dimension
print(bands["pain_vas"].sel(quantile=0.5).isel(time=-1).item())

# %% [markdown]
# ## 4. A dose-response curve over the same patients

# %%
curve = mscsim.sweep(sim, {"regimen.dose.cells": mscsim.logspace(1e6, 1e8, 3)}, ["pain_vas_day90"])
print("\n".join(curve.lines()))
curve.save(out / "dose_response")
guided.save(out / "guided")

# %% [markdown]
# ## 5. A bad value is a clear message, not a traceback

# %%
try:
    sim.with_dose(cells=-1)
except mscsim.InputError as err:
    print("refused:", err)

print(f"wrote {out}")
