"""The position error bound against a supervised model on etoile (issue 12): how the bound and the
model's error move with bandwidth, SNR, BS array and timing-advance uncertainty.

    python -m tfloc.studies.bound [--seeds 3] [--set KEY=VALUE ...] [--root runs/bound]
                                  [--out docs/results/bound.md] [--pages-only]

Each setting is configs/etoile_supervised.yaml as shipped (its split, epoch cap and early
stopping) with the setting's overrides, once per seed, scored once on its test split with the
``bound`` and ``bound_nuisance`` evaluators: the PEB of every test UE under that setting's own
channel, and the model's error over it. Each run's summary (its ``bound`` section kept) goes
into docs/results/bound/runs/ as it ends; the page is generated from those summaries alone,
and judges per setting whether the model's error moves the way the bound does
(:func:`follow_lines`).
"""
from __future__ import annotations

from tfloc.studies.common import Experiment, write_keeping_discussion
from tfloc.studies.summary import (Claim, by_experiment, claim_lines, epochs_cell, interval_cell,
                                   provenance, regenerate_page, seeded_study_main)

CONFIG = "configs/etoile_supervised.yaml"
SUMMARIES = "docs/results/bound/runs"
COMMAND = "python -m tfloc.studies.bound"
#: every run: the shipped model and schedule, scored with both bounds
COMMON = ["evaluation.evaluators=[position, per_condition, knn, mean, bound, bound_nuisance]"]
SETTINGS = {
    "reference: 98 MHz, 20 dB, 2x8 cross-pol (32), TA +-5 ns": [],
    "20 MHz (136 x 147 kHz)": ["data.subcarrier_spacing_hz=147e3"],
    "0 dB": ["data.snr_db=[0.0, 0.0]"],
    "8x4 array (64 antennas)": ["simulation.bs_array.num_rows=8", "simulation.bs_array.num_cols=4"],
    "4x2 array (16 antennas)": ["simulation.bs_array.num_rows=4", "simulation.bs_array.num_cols=2"],
    "TA known (+-0 ns)": ["data.ta_max_ns=0.0"],
    "TA +-50 ns": ["data.ta_max_ns=50.0"],
}
EXPERIMENTS = [Experiment(label, CONFIG, [*COMMON, *sets]) for label, sets in SETTINGS.items()]
REFERENCE = EXPERIMENTS[0].label
#: a setting whose bound moves by less than this factor gives the model no direction to follow
BOUND_MOVES = 1.1


def _stat(runs, *path, unit=" m"):
    """One bound statistic over seeds; "unbounded" where a seed's falls on an unbounded UE."""
    values = []
    for s in runs:
        v = s["sections"]["bound"]
        for k in path:
            v = v[k]
        if v is None or v == float("inf"):
            return "unbounded"
        values.append(v)
    fmt = "{:.3g}" if max(values) < 100 else "{:,.0f}"
    return interval_cell(values, fmt) + unit


def _los_median_peb(runs) -> float:
    """The mirror bound's LOS median PEB, averaged over seeds."""
    return sum(s["sections"]["bound"]["mirror"]["peb_m"]["LOS"]["median"] for s in runs) / len(runs)


def follow_lines(runs: dict) -> list:
    """Whether the model's error moves the way the bound does: per setting against the
    reference, the bound's factor (LOS median PEB, mirror) gives the direction, and the
    model's mean error on the same test links, paired by seed and link, is judged on it."""
    ref = runs.get(REFERENCE)
    if not ref:
        return []
    claims, still = [], []
    for e in EXPERIMENTS[1:]:
        rs = runs.get(e.label)
        if not rs:
            claims.append(Claim(e.label, REFERENCE, "mean_m", "bound: not run yet"))
            continue
        factor = _los_median_peb(rs) / _los_median_peb(ref)
        source = f"bound (LOS median) x{factor:.2f}"
        if factor >= BOUND_MOVES:
            claims.append(Claim(REFERENCE, e.label, "mean_m", source))
        elif factor <= 1 / BOUND_MOVES:
            claims.append(Claim(e.label, REFERENCE, "mean_m", source))
        else:
            still.append(f"{e.label} ({source})")
    lines = ["## Does the model follow the bound?", "",
             "Per setting against the reference: where the bound (LOS median PEB, mirror) grows or "
             f"shrinks by more than a factor {BOUND_MOVES:g}, the model's mean test error is expected to "
             "move the same way. Judged on the difference of mean errors on the same test links, paired "
             "by seed and link (bootstrap over seeds and links): **reproduced**: the model moves with "
             "the bound; **reversed**: against it; **not separable**: the interval contains zero.", "",
             *claim_lines(claims, runs), ""]
    if still:
        lines += ["Bound within that factor of the reference's (no direction to follow): "
                  + "; ".join(still) + ".", ""]
    return lines


def write_page(summaries: dict, out: str, command: str = COMMAND) -> str:
    runs = by_experiment(summaries)
    first = next(s for e in EXPERIMENTS for s in runs.get(e.label, []))
    cfg = first["resolved_config"]
    lines = ["# The position error bound against a supervised model (etoile)", "",
             provenance(command, SUMMARIES, summaries) + " Sionna RT `etoile`, the split of "
             f"`{CONFIG}` ({first['n_train_labelled']} labelled UEs, {first['n_val']} validation, "
             f"{first['n_test']} test; {cfg['simulation']['ue_grid']['spacing_m']:g} m grid, max depth "
             f"{cfg['simulation']['max_depth']}), the shipped ResNet-18 per setting. The bound is the "
             "Cramér-Rao position error bound (PEB) of each test UE under the same channel model, "
             "subcarriers, SNR and TA error as its run's data (`tfloc.physics.bound`): *mirror*, "
             "where every specular path follows the UE through mirror images, and the conservative "
             "*nuisance*, where only the LOS path does (NLOS UEs are unbounded).", "",
             "| setting | seeds | PEB median, LOS (mirror) | PEB median, NLOS (mirror) | PEB p90 (mirror) | "
             "PEB median, LOS (nuisance) | model mean error | model median error | "
             "median error / PEB (mirror) | median error / PEB, LOS (nuisance) | epochs run of cap (best) |",
             "|---" * 11 + "|"]
    for e in EXPERIMENTS:
        rs = runs.get(e.label)
        if not rs:
            continue
        lines.append(
            f"| {e.label} | {len(rs)} | {_stat(rs, 'mirror', 'peb_m', 'LOS', 'median')} | "
            f"{_stat(rs, 'mirror', 'peb_m', 'NLOS', 'median')} | {_stat(rs, 'mirror', 'peb_m', 'p90')} | "
            f"{_stat(rs, 'nuisance', 'peb_m', 'LOS', 'median')} | "
            f"{interval_cell([s['errors']['model']['mean_m'] for s in rs])} m | "
            f"{interval_cell([s['errors']['model']['p50_m'] for s in rs])} m | "
            f"{_stat(rs, 'mirror', 'error_over_peb', 'median', unit='')} | "
            f"{_stat(rs, 'nuisance', 'error_over_peb', 'LOS', 'median', unit='')} | {epochs_cell(rs)} |")
    lines += ["", "Overrides per row: " + "; ".join(
        f"{e.label}: `{' '.join(e.sets[len(COMMON):]) or '-'}`" for e in EXPERIMENTS) + ".", "",
        *follow_lines(runs)]
    return write_keeping_discussion(out, "\n".join(lines))


def regenerate(out: str, command: str = COMMAND) -> str:
    return regenerate_page(SUMMARIES, write_page, out, command)


def main(argv=None):
    seeded_study_main(__doc__, "bound", EXPERIMENTS, write_page, argv, keep=("bound",))


if __name__ == "__main__":
    main()
