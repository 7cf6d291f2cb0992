"""Compile a :class:`Model` once: SymPy rate laws -> stoichiometry, vectorised right-hand side, analytic Jacobian.

Two kinds of code are generated from the same SymPy expressions (after one common-subexpression elimination):
array code taking ``xp`` (the array namespace: NumPy, or ``jax.numpy`` for the JAX solver), a state batch ``x``
of shape (patients, states) and a parameter batch ``p`` (patients, parameters), so one source serves every array
backend; and scalar code for a few patients side by side (``rhs_w``, ``jac_w``), which the compiled engine
(:mod:`mscsim.solvers.compiled`) turns into machine code with Numba. :mod:`mscsim.model.cache` keeps the result
on disk, so a process compiles a composition only when no earlier process has.
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from sympy.printing.numpy import NumPyPrinter
from sympy.printing.pycode import PythonCodePrinter

from ..errors import DataError
from .compiled import CODEGEN_FORMAT, CompiledModel, model_key  # noqa: F401 - the format: bump it when _codegen changes
from .core import Model


def compile_model(model: Model) -> CompiledModel:
    """Parse the rate laws, check them, and generate array code (NumPy/JAX) and scalar code (Numba) for the
    rates, right-hand side and analytic Jacobian. No on-disk cache: see :func:`mscsim.model.cache.load_compiled`.
    """
    states = model.states
    state_names = tuple(s.name for s in states)
    xs = {n: sp.Symbol(n, real=True) for n in state_names}
    symbols = model.symbols
    ps = {n: sp.Symbol(n, real=True) for n in symbols}
    local = {**xs, **ps}
    exprs: dict[str, sp.Expr] = {}
    for name, text in model.expressions.items():
        exprs[name] = _parse(text, {**local, **{k: sp.Symbol(k) for k in model.expressions}}, f"expression '{name}'")
    # substitute derived expressions into each other until none remain
    expr_syms = {sp.Symbol(k): v for k, v in exprs.items()}
    for _ in range(len(exprs) + 1):
        exprs = {k: v.xreplace(expr_syms) for k, v in exprs.items()}
        expr_syms = {sp.Symbol(k): v for k, v in exprs.items()}
    procs = model.processes
    rate_exprs = []
    for proc in procs:
        e = _parse(proc.rate, {**local, **{k: sp.Symbol(k) for k in exprs}}, f"process '{proc.name}' rate")
        e = e.xreplace(expr_syms)
        unknown = {str(s) for s in e.free_symbols} - set(local)
        if unknown:
            raise DataError(f"process '{proc.name}' rate uses undeclared symbols {sorted(unknown)}")
        rate_exprs.append(e)
    initial = {s.initial for s in states if s.initial is not None}
    missing = sorted(initial - set(ps))
    if missing:
        raise DataError(f"initial values name parameters no enabled mechanism declares: {missing}")
    used = sorted(({str(s) for e in rate_exprs for s in e.free_symbols} & set(ps)) | initial, key=list(ps).index)
    S = np.zeros((len(states), len(procs)))
    for j, proc in enumerate(procs):
        if proc.source is not None:
            S[state_names.index(proc.source), j] -= 1.0
        if proc.target is not None:
            S[state_names.index(proc.target), j] += 1.0
    Ssym = sp.Matrix(S.astype(int))
    f = Ssym * sp.Matrix(rate_exprs) if procs else sp.zeros(len(states), 1)
    # No sympy.simplify on the derivatives: it took 95 % of the compile time (about 20 s for the tissue model) and,
    # measured, left the common-subexpression-eliminated code no smaller.
    jac_entries = []
    for i in range(len(states)):
        for k, n in enumerate(state_names):
            d = sp.diff(f[i], xs[n]) if f[i] != 0 else sp.Integer(0)
            if d != 0:
                jac_entries.append((i, k, d))
    jac_exprs = [e for _, _, e in jac_entries]
    state_syms = set(xs.values())
    linear = not any(e.free_symbols & state_syms for e in jac_exprs)  # a proof, on the symbolic derivatives
    source, scalar_source = _codegen(state_names, tuple(used), rate_exprs, jac_exprs, S)
    return CompiledModel(model=model, state_names=state_names, state_units=tuple(s.units for s in states),
                         param_names=tuple(used), param_units=tuple(symbols[n] for n in used),
                         process_names=tuple(p.name for p in procs), stoichiometry=S,
                         jac_rows=np.array([r for r, _, _ in jac_entries], dtype=np.intp),
                         jac_cols=np.array([c for _, c, _ in jac_entries], dtype=np.intp),
                         rate_text=tuple(sp.srepr(e) for e in rate_exprs), source=source,
                         scalar_source=scalar_source, key=model_key(model), linear=linear)


def _parse(text: str, local: dict, what: str) -> sp.Expr:
    try:
        return sp.sympify(text, locals=local)
    except (sp.SympifyError, SyntaxError, TypeError) as exc:
        raise DataError(f"{what}: cannot parse '{text}': {exc}") from exc


class _XpPrinter(NumPyPrinter):
    """Prints SymPy to array code against a module alias ``xp`` (NumPy or jax.numpy)."""

    def __init__(self):
        super().__init__({"fully_qualified_modules": True, "inline": True})

    def _module_format(self, fqn, register=True):
        out = super()._module_format(fqn, register)
        return out.replace("numpy.", "xp.")


class _ScalarPrinter(PythonCodePrinter):
    """Prints SymPy to scalar Python (``math.exp``...), which Numba compiles to machine code."""

    def __init__(self):
        super().__init__({"fully_qualified_modules": True, "inline": True})

    def _print_Pow(self, expr, rational=False):
        # x**-n as 1/x**n: Numba's integer power raises ZeroDivisionError at x = 0 whatever the error model, where
        # IEEE division gives inf (as NumPy does) and the solver's error control can reject the step
        if expr.exp.is_Integer and expr.exp < 0:
            power = expr.base if expr.exp == -1 else sp.Pow(expr.base, -expr.exp, evaluate=False)
            return f"(1.0/({self._print(power)}))"
        return super()._print_Pow(expr, rational=rational)


def _codegen(state_names, param_names, rate_exprs, jac_exprs, S) -> tuple[str, str]:
    """(array source, scalar source).

    The array source holds ``rates``, ``jac_values`` and ``rhs``: straight-line array code, one statement per shared
    term; and ``jac_values_bl`` and ``rhs_bl``, the same statements on batch-last arrays (states x patients), for
    the NumPy solver, where every state and parameter is then a contiguous row. The scalar source holds
    ``rhs_w`` and ``jac_w``, the same statements for a few patients side by side, for the compiled engine.

    Each function's expressions go through ``sympy.cse`` first: the derived expressions (licensing, cues,
    Hill terms) are substituted into every rate law and their derivatives, so without it the tissue model's
    Jacobian is ~8,000 operations of which ~1,000 are distinct, which costs NumPy time on every step and
    makes the JAX/XLA program (traced once per call of the model) several times larger to compile.
    """
    printer = _XpPrinter()

    def head(batch_last):
        def item(a, i):
            return f"{a}[{i}]" if batch_last else f"{a}[..., {i}]"

        return ([f"    _z = {item('x', 0)} * 0.0"] + [f"    {n} = {item('x', i)}" for i, n in enumerate(state_names)]
                + [f"    {n} = {item('p', i)}" for i, n in enumerate(param_names)])

    def stack(items, batch_last):
        return f"    return xp.stack([{', '.join(items)}], axis={0 if batch_last else -1})"

    def shared(exprs):
        """Common subexpressions as assignments, and the expressions rewritten in terms of them."""
        if not exprs:
            return [], []
        repl, reduced = sp.cse(list(exprs), symbols=sp.numbered_symbols("_cse"))
        return [f"    {s} = {printer.doprint(e)}" for s, e in repl], reduced

    rhs_lines, rhs_reduced = shared(rate_exprs)
    rhs_lines += [f"    _r{j} = {printer.doprint(e)}" for j, e in enumerate(rhs_reduced)]
    terms = []
    for i in range(len(state_names)):
        parts = [("+ " if S[i, j] > 0 else "- ") + f"_r{j}" for j in range(S.shape[1]) if S[i, j] != 0]
        terms.append("_z " + " ".join(parts) if parts else "_z")

    def rhs_body(fname, batch_last):
        return [f"def {fname}(xp, x, p):", *head(batch_last), *rhs_lines, stack(terms, batch_last)]

    def body(fname, exprs, batch_last=False, cse=None):
        out = [f"def {fname}(xp, x, p):", *head(batch_last)]
        if not exprs:
            shape = "(0,) + x.shape[1:]" if batch_last else "x.shape[:-1] + (0,)"
            out.append(f"    return xp.zeros({shape})")
            return out
        lines, reduced = cse if cse is not None else shared(exprs)
        out += lines
        out.append(stack([f"_z + ({printer.doprint(e)})" for e in reduced], batch_last))
        return out

    jac_cse = shared(jac_exprs)
    funcs = [body("rates", rate_exprs), body("jac_values", jac_exprs, cse=jac_cse), rhs_body("rhs", False),
             body("jac_values_bl", jac_exprs, True, jac_cse), rhs_body("rhs_bl", True)]
    array_source = "\n\n".join("\n".join(f) for f in funcs) + "\n"
    return array_source, _scalar_codegen(state_names, param_names, rate_exprs, jac_exprs, S)


def _scalar_codegen(state_names, param_names, rate_exprs, jac_exprs, S) -> str:
    """``rhs_w(x, p, f)`` and ``jac_w(x, p, jv)``: the right-hand side and Jacobian values of ``W`` patients side by
    side (``x`` (states, W), ``p`` (parameters, W), ``f`` (states, W), ``jv`` (nnz, W)), as one loop over the lanes
    whose body is straight-line scalar code from the same common-subexpression elimination as the array code.
    ``W`` is a global of the module that compiles this source (:mod:`mscsim.solvers.compiled`): a constant trip
    count lets the compiler vectorise across patients, while each lane's arithmetic is its own patient's alone.
    The right-hand side is summed from the rates in the stoichiometry's order, as the array code does."""
    printer = _ScalarPrinter()
    pad = "        "

    def head():
        return ([f"{pad}{n} = x[{i}, l]" for i, n in enumerate(state_names)]
                + [f"{pad}{n} = p[{i}, l]" for i, n in enumerate(param_names)])

    def cse(exprs):
        if not exprs:
            return [], []
        repl, reduced = sp.cse(list(exprs), symbols=sp.numbered_symbols("_cse"))
        return [f"{pad}{s} = {printer.doprint(e)}" for s, e in repl], reduced

    lines, reduced = cse(rate_exprs)
    rhs = ["def rhs_w(x, p, f):", "    for l in range(W):", *head(), *lines,
           *[f"{pad}_r{j} = {printer.doprint(e)}" for j, e in enumerate(reduced)]]
    for i in range(len(state_names)):
        parts = [("+ " if S[i, j] > 0 else "- ") + f"_r{j}" for j in range(S.shape[1]) if S[i, j] != 0]
        rhs.append(f"{pad}f[{i}, l] = 0.0 " + " ".join(parts))
    jac = ["def jac_w(x, p, jv):"]
    if jac_exprs:
        lines, reduced = cse(jac_exprs)
        jac += ["    for l in range(W):", *head(), *lines]
        jac += [f"{pad}jv[{k}, l] = {printer.doprint(e)}" for k, e in enumerate(reduced)]
    jac.append("    return")
    rhs.append("    return")
    return "\n".join(rhs) + "\n\n\n" + "\n".join(jac) + "\n"
