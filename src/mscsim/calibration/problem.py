"""A disease's calibration problem: which parameters are calibrated (with their priors), which published trial
numbers they are calibrated against (each with its own spread), and the model that maps one to the other.

The model of an observation is the virtual trial's statistic (mean, median, rate or arm-vs-control difference)
over a pool of virtual patients per arm. Training gives every design point its own pool (``pools``): with one pool
shared by every point (common random numbers) the pool's own sampling error is the same at every point, so it
shifts the posterior instead of averaging out, and the fit moved with the pool's size; with independent pools
it is noise the emulator's white-noise term averages over all the points.
Parameters are sampled in the unit cube of their prior CDFs (the probability-integral transform), so the prior is
uniform there and values go through the same inverse CDFs as bands and sensitivity (``uncertainty.priors``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from ..endpoints import load_endpoints
from ..errors import InputError
from ..trials.resample import trial_statistic
from ..trials.design import RATE_STATISTICS, DesignSpec, bundled_designs, load_design
from ..trials.uncertain import arm_sets, design_space
from ..uncertainty.priors import ParameterSpace, UncertainParameter

DATA = Path(__file__).resolve().parent.parent / "data"
SENSITIVITY_DIR = DATA / "credibility" / "sensitivity"
CHOICES_DIR = DATA / "calibration"  # per disease: parameters calibrated besides the influential ones, and why
Z95 = 1.959963984540054
MEDIAN_SE = 1.2533141373155001  # SE of a normal sample's median per SE of its mean: sqrt(pi / 2)
CHANGE = ("mean_change", "median_change", "difference_mean_change")
# the calibration's virtual patients: arm k's pool p starts at id k * ARM_STREAM + p * POOL_STREAM, room for 2^15
# patients in a pool, 2^13 pools (training points) in an arm and 15 arms in a design, ids below 2^32 (the cohorts')
POOL_STREAM = 2 ** 15
ARM_STREAM = 2 ** 28


@dataclass(frozen=True)
class Observation:
    """One published trial number with how sure the trial was of it: ``se`` is fixed where the paper gives a
    confidence interval (``spread`` 'ci'), binomial for a rate (spread 'binomial'), and from the simulated
    patients' spread over the arm's size otherwise (spread 'simulated sd', filled in by ``with_spreads``)."""

    design: str
    arm: str
    control: str | None
    endpoint: str
    statistic: str
    visit_day: float
    value: float
    n: int
    n_control: int | None
    spread: str
    se: float
    source: str
    trial_label: str = ""  # readable: the trial's short name and the arm's label (for figures and tables)
    arm_label: str = ""
    low: float = -np.inf  # the range a published level (mean, median) can take: its endpoint's (0 g/day up)
    high: float = np.inf
    cells: bool = False  # the arm gets cells (its statistics carry the trial's random cells' effect)
    scale: float = float("nan")  # between-patient SD of a continuous statistic (filled in by ``with_spreads``)

    @property
    def label(self) -> str:
        return f"{self.design}: {self.arm} {self.endpoint} {self.statistic} day {self.visit_day:g}"


def trial_label(design: DesignSpec) -> str:
    """A design's short readable name: the last parenthesis of its title ('Lamo-Espinosa 2016'), else its name."""
    found = re.findall(r"\(([^()]*)\)", design.title)
    return found[-1] if found else design.name


def observations(design: DesignSpec) -> list[Observation]:
    """Every published number of a design as an observation."""
    sizes = {a.name: a.n for a in design.arms}
    labels = {a.name: a.label for a in design.arms}
    cells = {a.name: a.has_cells for a in design.arms}
    control = design.control.name if design.control is not None else None
    ranges = {k: e.range for k, e in load_endpoints(design.disease).spec.endpoints.items() if e.range is not None}
    out = []
    for p in design.published:
        diff = p.statistic.startswith("difference")
        low, high = ranges.get(p.endpoint, (-np.inf, np.inf)) if p.statistic in ("mean", "median") \
            else (-np.inf, np.inf)
        n, nc = sizes[p.arm], (sizes[control] if diff and control else None)
        if p.ci_low is not None and p.ci_high is not None:
            spread, se = "ci", (p.ci_high - p.ci_low) / (2 * Z95)
        elif p.statistic in RATE_STATISTICS:
            q = min(max(p.value, 0.5 / n), 1 - 0.5 / n)  # a published 0 % or 100 % still has a spread
            spread, se = "binomial", float(np.sqrt(q * (1 - q) / n))
        else:
            spread, se = "simulated sd", float("nan")
        out.append(Observation(design.name, p.arm, control if diff else None, p.endpoint, p.statistic,
                               float(p.visit_day), float(p.value), n, nc, spread, float(se), ",".join(p.source),
                               trial_label(design), labels.get(p.arm) or p.arm, float(low), float(high),
                               cells[p.arm]))
    return out


def influential_parameters(disease: str, top: int) -> list[str]:
    """The model parameters the bundled sensitivity record ranks influential (total Sobol index above its
    threshold) for any of the disease's outputs: the ``top`` strongest, then every influential one that an
    earlier single-number fit set (the MSC efficacy parameters, whose fits the posterior replaces)."""
    folder = SENSITIVITY_DIR / disease
    tables = [pd.read_csv(f) for f in sorted(folder.glob("*.csv"))] if folder.is_dir() else []
    if not tables:
        raise InputError("disease", disease, f"a disease with a bundled sensitivity record "
                         f"({', '.join(sorted(p.name for p in SENSITIVITY_DIR.iterdir() if p.is_dir()))})")
    t = pd.concat(tables)
    t = t[(t["influential"] == True) & (t["role"] == "model")]  # noqa: E712 (a pandas column)
    ranked = t.groupby("parameter")["ST"].max().sort_values(ascending=False)
    fitted = set(t.loc[t["fitted"] == True, "parameter"])  # noqa: E712
    return list(ranked.index[:top]) + [p for p in ranked.index[top:] if p in fitted]


def extra_parameters(disease: str) -> list[str]:
    """Parameters a disease's calibration adds to the influential ones (data/calibration/<disease>.yaml), each
    with the reason there (e.g. the saturation of the paracrine effect, for dose-ranging trials)."""
    import yaml

    path = CHOICES_DIR / f"{disease}.yaml"
    if not path.exists():
        return []
    return [e["name"] for e in (yaml.safe_load(path.read_text()) or {}).get("extra_parameters", [])]


def disease_designs(disease: str) -> list[DesignSpec]:
    """The bundled trial designs of a disease that publish at least one number."""
    out = []
    for name in bundled_designs():
        design, _ = load_design(name)
        if design.disease == disease and design.published:
            out.append(design)
    return out


def _for_calibration(design: DesignSpec, pool: int) -> DesignSpec:
    """The design as calibration runs it: ``pool`` patients per arm and no dropout (a missed visit only adds
    noise to a pool's mean), its own seed, arms and visits."""
    arms = [a.model_copy(update={"n": pool}) for a in design.arms]
    return design.model_copy(update={"arms": arms, "dropout": design.dropout.model_copy(
        update={"rate_per_year": 0.0}), "power": None, "prediction": None, "uncertainty": None})


@dataclass(frozen=True)
class CalibrationProblem:
    """Parameters (with priors), observations and the virtual trials that connect them."""

    disease: str
    designs: tuple[DesignSpec, ...]
    space: ParameterSpace  # the calibrated parameters, in order, with their priors
    observations: tuple[Observation, ...]
    pool: int
    excluded: tuple[str, ...] = ()
    _run_designs: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def names(self) -> tuple[str, ...]:
        return self.space.names

    @cached_property
    def table(self) -> pd.DataFrame:
        return pd.DataFrame([o.__dict__ for o in self.observations])

    @property
    def used(self) -> np.ndarray:
        """Which observations the likelihood uses: all but those of excluded (held-out) designs, which are
        predicted instead."""
        return np.array([o.design not in self.excluded for o in self.observations])

    def excluding(self, designs: tuple[str, ...]) -> "CalibrationProblem":
        return CalibrationProblem(self.disease, self.designs, self.space, self.observations, self.pool,
                                  tuple(designs), self._run_designs)

    def values(self, unit: np.ndarray) -> np.ndarray:
        """Parameter values (n, k) of unit-cube points (n, k)."""
        return self.space.values(np.clip(unit, 1e-9, 1 - 1e-9))

    def simulate(self, unit: np.ndarray, progress=None, pools: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """(predictions, sds), each (sets, observations): the virtual trial's statistic for every observation
        under each parameter set (rows of ``unit``), and the between-patient SD of what it summarises (for an
        observation's spread when the paper gives none). NaN where a set fails or an arm enrols no one.
        ``pools`` (one integer per set) gives each set its own virtual patients (``trials.uncertain.arm_sets``);
        without it every set sees the same ones. Arm k's pool p is patients k * ARM_STREAM + p * POOL_STREAM
        onwards, whatever the pool size, so a larger pool holds a smaller one's patients in every arm (the pool
        doubling of the calibration issue's item 6 adds patients; it does not swap them)."""
        unit = np.atleast_2d(unit)
        m = len(unit)
        most = ARM_STREAM // POOL_STREAM
        if pools is not None and len(pools) and not 0 <= int(np.min(pools)) <= int(np.max(pools)) < most:
            raise ValueError(f"pools must lie in [0, {most}): one per training point")
        values = self.values(unit)
        pred = np.full((m, len(self.observations)), np.nan)
        sds = np.full_like(pred, np.nan)
        arms_total = sum(len(d.arms) for d in self.designs)
        done = 0
        for design in self.designs:
            run = self._run_designs.setdefault(design.name, _for_calibration(design, self.pool))
            space = design_space(run)
            rows = np.repeat(space.nominal()[None, :], m, axis=0)
            for j, name in enumerate(self.names):
                if name in space.names:
                    rows[:, space.names.index(name)] = values[:, j]
            if len(run.arms) * ARM_STREAM >= 2 ** 32:
                raise ValueError(f"{design.name}: a calibration takes designs of at most "
                                 f"{2 ** 32 // ARM_STREAM - 1} arms")
            tables = {}
            for k, arm in enumerate(run.arms):
                tables[arm.name], _ = arm_sets(run, arm, space, rows, np.arange(m), self.pool, pools=pools,
                                               first=k * ARM_STREAM, pool_stride=POOL_STREAM)
                done += 1
                if progress is not None:
                    progress(done, arms_total)
            for i, o in enumerate(self.observations):
                if o.design == design.name:
                    pred[:, i], sds[:, i] = _predict(o, tables, m)
        return pred, sds


def _pool(table: pd.DataFrame, o: Observation, m: int) -> list[np.ndarray]:
    """Per parameter set, the pool's values (or changes) of the observation's endpoint at its visit."""
    endpoint = f"{o.endpoint}_{o.statistic.removesuffix('_rate')}" if o.statistic in ("complete_rate",
                                                                                    "partial_rate") else o.endpoint
    column = "change" if o.statistic in CHANGE else "value"
    if table.empty:
        return [np.array([])] * m
    at = table[(table["endpoint"] == endpoint) & (table["visit_day"] == o.visit_day)]
    groups = {int(k): g[column].to_numpy(dtype=float) for k, g in at.groupby("draw")}
    return [groups.get(r, np.array([])) for r in range(m)]


def _predict(o: Observation, tables: dict[str, pd.DataFrame], m: int) -> tuple[np.ndarray, np.ndarray]:
    a = _pool(tables[o.arm], o, m)
    c = _pool(tables[o.control], o, m) if o.control else None
    pred, sd = np.full(m, np.nan), np.full(m, np.nan)
    statistic = "difference" if o.statistic.startswith("difference") else o.statistic
    for r in range(m):
        x = a[r][~np.isnan(a[r])]
        y = None if c is None else c[r][~np.isnan(c[r])]
        if len(x) < 2 or (y is not None and len(y) < 2):
            continue
        pred[r] = float(trial_statistic(statistic, x[None, :], None if y is None else y[None, :])[0])
        if y is None:
            sd[r] = float(np.std(x, ddof=1)) * (MEDIAN_SE if o.statistic.startswith("median") else 1.0)
        else:  # the spread of a difference, expressed per patient of the treated arm
            sd[r] = float(np.sqrt(np.var(x, ddof=1) + np.var(y, ddof=1) * o.n / max(o.n_control or o.n, 1)))
    return pred, sd


def with_spreads(problem: CalibrationProblem, sds: np.ndarray) -> CalibrationProblem:
    """Fill in each 'simulated sd' observation's SE: the median over parameter sets of the pool's SD, over the
    square root of the arm's size (the trial's own sampling error of that statistic); and every continuous
    statistic's between-patient SD (``scale``: a standardized effect's unit; a difference's pooled SD of one arm)."""
    obs = []
    for i, o in enumerate(problem.observations):
        col = sds[:, i][np.isfinite(sds[:, i])]
        sd = float(np.median(col)) if len(col) else float("nan")
        update = {}
        if o.spread == "simulated sd":
            update["se"] = sd / np.sqrt(o.n)
        if o.statistic not in RATE_STATISTICS and o.statistic != "difference_rate":
            per = MEDIAN_SE if "median" in o.statistic else 1.0
            arms = np.sqrt(1 + o.n / max(o.n_control or o.n, 1)) if o.statistic.startswith("difference") else 1.0
            update["scale"] = sd / per / arms
        obs.append(Observation(**{**o.__dict__, **update}) if update else o)
    return CalibrationProblem(problem.disease, problem.designs, problem.space, tuple(obs), problem.pool,
                              problem.excluded, problem._run_designs)


def build_problem(disease: str, *, parameters: list[str] | None = None, top: int = 4, pool: int = 200,
                  exclude: tuple[str, ...] = (), designs: list[str] | None = None) -> CalibrationProblem:
    """The calibration problem of ``disease``: by default the influential model parameters (sensitivity record)
    and the trial-level responses its designs use (placebo and standard-care response), against every published
    number of its bundled designs except those of ``exclude``d designs."""
    chosen = disease_designs(disease) if designs is None else [load_design(d)[0] for d in designs]
    for d in chosen:
        if d.disease != disease:
            raise InputError("--targets", d.name, f"designs of {disease} (this one is of {d.disease})")
        if not d.published:
            raise InputError("--targets", d.name, "designs with published numbers (this one has none)")
    known = {d.name for d in chosen}
    for name in exclude:
        if name not in known:
            raise InputError("--exclude", name, f"one of {disease}'s designs with published numbers: {sorted(known)}")
    if not chosen:
        raise InputError("disease", disease, "a disease with at least one bundled trial design that publishes numbers")
    if not isinstance(pool, int) or not 10 <= pool <= POOL_STREAM:
        raise InputError("--pool", pool, f"an integer in [10, {POOL_STREAM}] (virtual patients per arm)")
    spaces = [design_space(_for_calibration(d, pool)) for d in chosen]
    available: dict[str, UncertainParameter] = {}
    for s in spaces:
        for p in s.parameters:
            available.setdefault(p.name, p)
    if parameters is None:
        names = influential_parameters(disease, top)
        names += [n for n in extra_parameters(disease) if n not in names]
        trial = [p.name for s in spaces for p in s.parameters if p.role == "trial" and not
                 p.name.startswith("noise_sd_") and _used_by_arms(p.name, chosen)]
        names += [n for n in dict.fromkeys(trial) if n not in names]
    else:
        names = list(parameters)
    for n in names:
        if n not in available:
            raise InputError("--parameters", n, f"an uncertain parameter of {disease}'s designs "
                             f"(e.g. {', '.join(sorted(available)[:8])}, ...)")
        if available[n].dist.distribution == "fixed":
            raise InputError("--parameters", n, "a parameter with an uncertainty distribution (this one is fixed)")
    space = ParameterSpace(tuple(available[n] for n in names))
    obs = [o for d in chosen for o in observations(d)]
    if all(o.design in exclude for o in obs):
        raise InputError("--exclude", list(exclude), "leaving at least one published number to calibrate against")
    return CalibrationProblem(disease, tuple(chosen), space, tuple(obs), pool, tuple(exclude))


def _used_by_arms(name: str, designs: list[DesignSpec]) -> bool:
    """A placebo response is calibrated only if some design has an arm with that comparator."""
    if name.startswith("placebo_r_"):
        comparator = name.removeprefix("placebo_r_")
        return any(a.comparator == comparator for d in designs for a in d.arms)
    return True
