"""`cryogen benchmark --dataset`: the SLURM job count with and without groups, read off Snakemake's
DAG, and each job's wall time read off Snakemake's log (cryogen.bench.dataset)."""

from __future__ import annotations

import math

import pytest

from cryogen.bench.dataset import DatasetOptions, count_submissions, job_times, parse_dag, run_dataset, target_rows
from cryogen.errors import CryogenError

# two tomograms: chunk -> train (one) -> reconstruct -> stitch -> report, as `snakemake --dag` draws them
DOT = """digraph snakemake_dag {
    graph[bgcolor=white, margin=0];
	0[label = "all", color = "0.00 0.6 0.85", style="rounded"];
	1[label = "stitch", color = "0.52 0.6 0.85", style="rounded"];
	2[label = "reconstruct", color = "0.30 0.6 0.85", style="rounded"];
	3[label = "chunk", color = "0.15 0.6 0.85", style="rounded"];
	4[label = "train\\ngroup: dataset", color = "0.59 0.6 0.85", style="rounded"];
	5[label = "chunk", color = "0.15 0.6 0.85", style="rounded"];
	6[label = "report", color = "0.37 0.6 0.85", style="rounded"];
	7[label = "stitch", color = "0.52 0.6 0.85", style="rounded"];
	8[label = "reconstruct", color = "0.30 0.6 0.85", style="rounded"];
	9[label = "report", color = "0.37 0.6 0.85", style="rounded"];
	1 -> 0
	6 -> 0
	7 -> 0
	9 -> 0
	4 -> 0
	2 -> 1
	3 -> 2
	4 -> 2
	3 -> 4
	5 -> 4
	1 -> 6
	8 -> 7
	5 -> 8
	4 -> 8
	7 -> 9
}
"""


def test_the_dag_is_read_with_its_rules_and_dependencies():
    nodes, edges = parse_dag(DOT)
    assert nodes[4] == "train" and sorted(nodes.values()).count("chunk") == 2 and len(nodes) == 10
    assert (1, 6) in edges and (4, 0) in edges and len(edges) == 15


def test_groups_make_one_job_of_what_depends_on_each_other():
    nodes, edges = parse_dag(DOT)
    assert count_submissions(nodes, edges, {}) == 9  # every job but the local `all`
    per_tomogram = {"stitch": "tomogram", "report": "tomogram"}
    assert count_submissions(nodes, edges, per_tomogram) == 7  # stitch + report: one job per tomogram
    assert count_submissions(nodes, edges, per_tomogram, {"tomogram": 2}) == 6  # both tomograms' in one
    # jobs of one group that do not depend on each other stay apart: chunk (2) and train are linked
    assert count_submissions(nodes, edges, {"chunk": "prep", "train": "prep"}) == 7
    assert count_submissions(nodes, edges, {"chunk": "prep", "stitch": "prep"}) == 9


LOG = """Building DAG of jobs...
[Thu Dec  3 13:43:36 2026]
localrule simulate:
    output: a.mrc
    jobid: 3
    wildcards: tomogram=t001
[Thu Dec  3 13:43:38 2026]
rule chunk:
    jobid: 5
    reason: Missing output files
    wildcards: tomogram=t002
    resources: tmpdir=/tmp
[Thu Dec  3 13:43:41 2026]
Finished jobid: 3 (Rule: simulate)
1 of 3 steps (33%) done
[Thu Dec  3 13:43:50 2026]
Finished jobid: 5 (Rule: chunk)
2 of 3 steps (67%) done
[Thu Dec  3 13:43:51 2026]
rule train:
    jobid: 7
    wildcards: group=dataset
"""


def test_job_times_come_from_the_stamps_around_each_job():
    jobs = {j.rule: j for j in job_times(LOG)}
    assert jobs["simulate"].seconds == 5 and jobs["simulate"].wildcards == "tomogram=t001"
    assert jobs["chunk"].seconds == 12 and jobs["chunk"].wildcards == "tomogram=t002"
    assert math.isnan(jobs["train"].seconds)  # never finished


def test_the_target_estimate_scales_with_the_overhead():
    small, large = target_rows(1.0, (10.0,)), target_rows(4.0, (10.0,))
    assert small[0]["value"] == large[0]["value"]  # the GPU's reconstruct time does not depend on it
    assert float(large[1]["value"]) == pytest.approx(4 * float(small[1]["value"]), rel=0.01)


def test_a_folder_without_a_snakefile_is_a_one_line_error(tmp_path):
    with pytest.raises(CryogenError, match="no Snakefile"):
        run_dataset(DatasetOptions(count=1, workdir=tmp_path, workflow=tmp_path, run=False))


@pytest.mark.workflow
def test_a_dry_run_counts_the_jobs_of_two_tomograms(tmp_path):
    """The real workflow and profiles: 2 tomograms are 9 SLURM jobs (chunk, reconstruct, stitch,
    report each, one train); the workflow profile's groups make each tomogram's stitch and report one."""
    from cryogen.bench.dataset import checkout, profile_groups

    rows = run_dataset(DatasetOptions(count=2, workdir=tmp_path, run=False))
    counts = {r["figure"]: int(r["value"]) for r in rows}
    assert counts["SLURM jobs, no groups"] == 9
    groups, _ = profile_groups(checkout(None))
    grouped = {"stitch", "report"} <= set(groups) and groups["stitch"] == groups["report"]
    assert counts["SLURM jobs, the profile's groups"] == (7 if grouped else 9)
    assert sorted(p.name for p in (tmp_path / "dataset" / "data").glob("*.mrc")) == ["t001.mrc", "t002.mrc"]
