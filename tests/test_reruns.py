"""Reruns do what they say: a threshold change reruns only aggregation, a killed or failed
shard resumes alone to the uninterrupted result, an interrupted snakemake finishes with the
plain command, the card waits for what it reports, and what cannot work is refused."""

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import default_sigint
from tests.workflow_runs import (
    AFTER_AGGREGATE,
    IMAGES_PER_IDENTITY,
    MANIFEST,
    change_config,
    copy_run,
    generate_logs,
    local_environment,
    planned_jobs,
    read_table,
    remove_generation,
    snakemake,
    snakemake_command,
    stored,
)

pytestmark = pytest.mark.workflow


def test_changing_a_threshold_reruns_only_aggregation(run, tmp_path):
    workdir = copy_run(run, tmp_path / "threshold")
    assert planned_jobs(workdir) == {}
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["quality"]["min_det_score"] = 0.99
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    assert planned_jobs(workdir) == AFTER_AGGREGATE
    snakemake(workdir, MANIFEST)
    rows = read_table(workdir / "results/manifest.parquet")
    assert all(r["det_score"] >= 0.99 for r in rows if r["passed"])
    assert any(r["reject_reason"] == "low_det_score" for r in rows)


def test_killed_shard_resumes_to_the_uninterrupted_result(run, tmp_path):
    workdir = copy_run(run, tmp_path / "kill")
    remove_generation(workdir)
    killed = snakemake(workdir, MANIFEST, env={"DIGI2REAL_KILL_AFTER_IMAGES": "6"}, check=False)
    assert killed.returncode != 0
    started = list((workdir / "results/shards").iterdir())
    killed = [folder for folder in started if not (folder / "manifest.parquet").exists()]
    # Shard 2 holds only the two skipped identities: nothing to generate, nothing to kill.
    assert killed and {folder.name for folder in started} - {f.name for f in killed} <= {"2"}
    for folder in killed:
        assert len(list(folder.glob("raw/*/*.jpg"))) == 6, "killed after its 6th image"
        assert not [p for p in folder.rglob("*") if p.name.startswith(".")], "no partial file"
        assert not (folder / "images.zip").exists()
    snakemake(workdir, MANIFEST)
    assert read_table(workdir / "results/manifest.parquet") == read_table(
        run / "results/manifest.parquet"
    )
    # Each committed shard: its archive, bitwise the uninterrupted one's, and a few files.
    archives = sorted((run / "results/shards").glob("*/images.zip"))
    assert len(archives) == 3
    for archive in archives:
        twin = workdir / archive.relative_to(run)
        assert twin.read_bytes() == archive.read_bytes(), archive
        # records.jsonl: the journal, absent where nothing was generated (shard 2)
        files = {p.name for p in twin.parent.rglob("*")} - {"records.jsonl"}
        assert files == {"images.zip", "manifest.parquet", "manifest.csv", "embeddings.h5"}


def test_a_failed_shard_leaves_the_others_and_only_it_reruns(run, tmp_path):
    workdir = copy_run(run, tmp_path / "fail")
    remove_generation(workdir)
    failed = snakemake(
        workdir, "--keep-going", MANIFEST, env={"DIGI2REAL_FAIL_SHARDS": "1"}, check=False
    )
    assert failed.returncode != 0
    shards = workdir / "results/shards"
    assert (shards / "0/manifest.parquet").is_file() and (shards / "2/manifest.parquet").is_file()
    assert not (shards / "1/manifest.parquet").exists()
    assert planned_jobs(workdir) == {"generate": 1, **AFTER_AGGREGATE}
    snakemake(workdir, MANIFEST)
    assert read_table(workdir / "results/manifest.parquet") == read_table(
        run / "results/manifest.parquet"
    )


def test_shard_size_does_not_change_the_images(run, tmp_path):
    workdir = copy_run(run, tmp_path / "shards")
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["plan"]["identities_per_shard"] = 3
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    assert planned_jobs(workdir)["generate"] == 4
    remove_generation(workdir)
    snakemake(workdir, MANIFEST)
    ours = {
        (r["identity"], r["image_index"]): r
        for r in read_table(workdir / "results/manifest.parquet")
    }
    theirs = {
        (r["identity"], r["image_index"]): r for r in read_table(run / "results/manifest.parquet")
    }
    assert ours.keys() == theirs.keys()
    for key, row in ours.items():
        other = theirs[key]
        moved = ("shard", "archive")
        assert {k: v for k, v in row.items() if k not in moved} == {
            k: v for k, v in other.items() if k not in moved
        }, key
        for column in ("raw_path", "aligned_path"):
            if row[column]:
                mine = stored(workdir / "results", row, column)
                assert mine == stored(run / "results", other, column), key


# What snakemake prints once it took a Ctrl-C (its scheduler catches the KeyboardInterrupt).
TERMINATING = "Terminating processes on user request"


def press_ctrl_c(process: subprocess.Popen, stderr_path: Path, tries: int = 5) -> None:
    """SIGINT to snakemake, again where it did not take it: snakemake 9's log handler swallows
    a KeyboardInterrupt raised while it writes a line (snakemake/logging.py, `except
    (KeyboardInterrupt, SystemExit): pass`), and the run then goes on to the end, as a user
    whose Ctrl-C was lost sees it; they press it again."""
    for _ in range(tries):
        process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if process.poll() is not None or TERMINATING in stderr_path.read_text():
                return
            time.sleep(0.2)


def test_interrupted_snakemake_then_the_plain_command_completes(run, tmp_path):
    """Ctrl-C to snakemake alone, mid-shard, then the same command: no IncompleteFilesException,
    and the result of an uninterrupted run."""

    workdir = copy_run(run, tmp_path / "interrupted")
    remove_generation(workdir)
    stderr_path = tmp_path / "snakemake.stderr"
    with open(stderr_path, "wb") as stderr_file:
        process = subprocess.Popen(
            snakemake_command(workdir),
            stdout=subprocess.DEVNULL,
            stderr=stderr_file,
            env=local_environment(),
            preexec_fn=default_sigint,
        )
    deadline = time.monotonic() + 300
    while not list((workdir / "results/shards").glob("*/raw/*/*.jpg")):
        assert process.poll() is None and time.monotonic() < deadline, "no image was written"
        time.sleep(0.2)
    press_ctrl_c(process, stderr_path)
    process.wait(timeout=120)
    stderr = stderr_path.read_text()
    assert process.returncode != 0, f"interrupted before it finished:\n{stderr[-3000:]}"
    assert not (workdir / "results/manifest.parquet").exists()
    # Ours reads as an interruption: no traceback in a job's log.
    logs = generate_logs(workdir)
    assert "Traceback" not in logs, logs
    snakemake(workdir)
    assert read_table(workdir / "results/manifest.parquet") == read_table(
        run / "results/manifest.parquet"
    )


def test_the_card_is_made_after_what_it_reports(run, tmp_path):
    """The card counts the exports' files and sums every job's benchmark: it depends on them,
    so an export made again remakes the card after it, and never the other way round."""
    workdir = copy_run(run, tmp_path / "card")
    shutil.rmtree(workdir / "results/export/recordio")
    assert planned_jobs(workdir) == {"export_recordio": 1, "card": 1, "all": 1}
    (workdir / "results/benchmarks/plan.tsv").unlink()
    assert planned_jobs(workdir)["plan"] == 1


@pytest.mark.parametrize(
    "mode, named",
    [
        (["--touch"], "--touch would mark generation shards done whose images do not exist"),
        (
            ["--shared-fs-usage", "persistence", "software-deployment", "sources"],
            "--shared-fs-usage must include input-output",
        ),
    ],
)
def test_modes_that_copy_or_fake_only_declared_files_are_refused(run, tmp_path, mode, named):
    """A shard's images.zip is read by later jobs without being a declared output (a rerun
    reuses its images): a mode that would not see it as it is stops, in one line, first."""
    workdir = copy_run(run, tmp_path / "modes")
    (workdir / "results/dataset_card.json").unlink()  # something to do
    result = snakemake(workdir, *mode, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and named in output, output[-2000:]
    assert "needs its results folder on a file system every job shares" in output
    assert not (workdir / "results/dataset_card.json").exists()


def test_a_small_last_shard_asks_for_its_own_runtime(run, tmp_path):
    """10 identities in shards of 4: the last shard has 2, and asks for half the time."""

    workdir = copy_run(run, tmp_path / "runtime")
    remove_generation(workdir)
    change_config(workdir, "cluster.seconds_per_image", 60.0)
    output = snakemake(workdir, "-n").stdout
    runtimes = {
        int(shard): int(minutes)
        for shard, minutes in re.findall(
            r"rule generate:.*?wildcards: shard=(\d+).*?runtime=(\d+)", output, re.S
        )
    }
    # 10 minutes, then each image twice over at cluster.seconds_per_image
    full, last = (10 + 2 * identities * IMAGES_PER_IDENTITY for identities in (4, 2))
    assert runtimes == {0: full, 1: full, 2: last}


def test_one_shard_first_runs_one_generation_job(run, tmp_path):
    """README's "Run one shard first": its target and what it needs, nothing more."""
    workdir = copy_run(run, tmp_path / "one")
    remove_generation(workdir)
    assert planned_jobs(workdir, "results/shards/0/manifest.parquet") == {"generate": 1}
