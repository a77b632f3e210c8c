"""Every image belongs to the settings that made it: a rerun remakes exactly the images whose
key (settings, models, Δ, condition, seed) changed, and reuses every other."""

import json
import shutil
import zipfile

import pytest
import yaml

from tests.workflow_runs import (
    GENERATED,
    IMAGES_PER_IDENTITY,
    MANIFEST,
    change_config,
    copy_run,
    planned_jobs,
    raw_images,
    read_table,
    reused_and_made,
    snakemake,
)

pytestmark = pytest.mark.workflow


@pytest.mark.parametrize(
    "change",
    [
        "generation.steps",
        "generation.height",
        "delta.scale",
        "ffhq.count",  # another FFHQ subset: another Δ
        "model file changed in place",
    ],
)
def test_a_setting_that_changes_pixels_remakes_every_image(run, tmp_path, change):
    workdir = copy_run(run, tmp_path / "changed")
    if change == "model file changed in place":
        from digi2real.demo.hf_models import write_vae

        config = yaml.safe_load((workdir / "config.yaml").read_text())
        vae = workdir / "vae"
        shutil.copytree(config["models"]["vae"], vae)
        change_config(workdir, "models.vae", str(vae))
        snakemake(workdir, MANIFEST)  # the same VAE at another path: every image reused
        assert reused_and_made(workdir) == (GENERATED, 0)
        (vae / "README.md").write_text("notes beside the weights, not read by the loader\n")
        # The model's hash covers what the loader reads: nothing that makes the dataset reruns.
        assert planned_jobs(workdir, MANIFEST) == {}
        write_vae(vae, seed=7)  # other weights, same path
        shutil.rmtree(workdir / "results/logs/generate")
    else:
        new = {
            "generation.steps": 5,
            "generation.height": 56,
            "delta.scale": 0.5,
            "ffhq.count": 12,
        }[change]
        change_config(workdir, change, new)
    snakemake(workdir, MANIFEST)
    assert reused_and_made(workdir) == (0, GENERATED)
    before, after = raw_images(run), raw_images(workdir)
    assert before.keys() == after.keys() and all(after[k] != before[k] for k in before)
    keys = {r["image_key"] for r in read_table(workdir / "results/manifest.parquet")} - {""}
    old = {r["image_key"] for r in read_table(run / "results/manifest.parquet")} - {""}
    assert len(keys) == len(old) == GENERATED and not keys & old


def test_more_images_per_identity_generates_only_the_new_ones(run, tmp_path):
    workdir = copy_run(run, tmp_path / "more")
    change_config(workdir, "plan.images_per_identity", IMAGES_PER_IDENTITY + 2)
    snakemake(workdir)
    assert reused_and_made(workdir) == (GENERATED, 8 * 2)
    before, after = raw_images(run), raw_images(workdir)
    assert all(after[k] == before[k] for k in before)  # bitwise: the same settings made them
    assert len(after) == len(before) + 8 * 2
    card = json.loads((workdir / "results/dataset_card.json").read_text())
    # 10 identities selected, 2 of them skipped by the plan (8: no image, 9: no face)
    assert card["images"]["planned"] == 8 * (IMAGES_PER_IDENTITY + 2)


def test_a_lost_record_or_a_foreign_image_is_made_again(run, tmp_path):
    """A loose raw file without its record (a kill between the two, or another run's file left
    in the folder) is never taken for this run's image. (An archived image is taken only when
    its member's comment is its key: tests/test_shards.py.)"""
    workdir = copy_run(run, tmp_path / "foreign")
    shard = workdir / "results/shards/0"
    # Back to the shard as it was before its commit: its raw images loose, no archive.
    with zipfile.ZipFile(shard / "images.zip") as archive:
        archive.extractall(shard, [n for n in archive.namelist() if n.startswith("raw/")])
    (shard / "images.zip").unlink()
    records = (shard / "records.jsonl").read_text().splitlines()
    (shard / "records.jsonl").write_text("\n".join(records[2:]) + "\n{cut short")
    shutil.rmtree(workdir / "results/logs/generate")
    # README's way to redo a shard: name its manifest as the target, with --forcerun.
    snakemake(workdir, "--forcerun", "results/shards/0/manifest.parquet", MANIFEST)
    assert reused_and_made(workdir) == (4 * IMAGES_PER_IDENTITY - 2, 2)
    assert raw_images(workdir) == raw_images(run)
