"""The README's results section and report.html, rendered from a tiny fake results folder."""

import base64
import contextlib
import json
import os
import shutil
import struct
import zlib

import pytest

from experiments import all as run_all
from sinks_jax import report_html, results_tables
from sinks_jax.errors import DataError

CLAIMS_A = [
    {"name": "sink", "paper_value": "0.78 (1k)", "measured": 0.904686, "threshold": ">= 0.8",
     "passed": True},
    {"name": "drain | ratio", "paper_value": None, "measured": 1.23456e-7, "threshold": "<= 0.35",
     "passed": False},
    {"name": "ratio", "paper_value": "Attn_<s> > 0.5", "measured": None, "threshold": ">= 1",
     "passed": False, "undefined": "no clear sink"},
]  # fmt: skip
CLAIMS_B = [
    {"name": "all_active", "paper_value": "yes", "measured": True, "threshold": "== 1",
     "passed": True},
]  # fmt: skip


def png() -> bytes:
    """A valid 1×1 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


def write_run(folder, name, claims, seed=0, wall=52.4, figures=()):
    folder.mkdir(parents=True)
    metrics = {
        "experiment": name,
        "preset": "quick",
        "config": {"seed": seed, "train": {"steps": 10}},
        "wall_time_s": wall,
        "environment": {"python": "3.11.7", "jax": "0.10.2", "flax": "0.12.8"},
        "claims": claims,
        "figures": list(figures),
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    for f in figures:
        (folder / f).write_bytes(png())
    return folder


@pytest.fixture
def reference(tmp_path):
    root = tmp_path / "reference"
    write_run(root / "alpha" / "quick", "alpha", CLAIMS_A, figures=["a.png"])
    write_run(root / "beta" / "quick", "beta", CLAIMS_B, seed=3, wall=7.0)
    (root / "beta" / "quick" / "env.json").write_text(json.dumps({"wall_time_s": 900.2}))
    return root


def test_render_counts_and_formats_every_claim(reference):
    text = results_tables.render(reference, order=["beta", "alpha", "gamma"])
    assert "| `beta` | 3 | — | 1 | 0 | 0 | 1 | 900 |" in text  # env.json's wall time wins
    assert "| `alpha` | 0 | — | 1 | 1 | 1 | 3 | 52 |" in text
    assert "| **all** | | **—** | 2 | 1 | 1 | 4 | |" in text
    assert "0 of 0 reproduction claims; other claims: none — counted over the runs whose " in text
    assert "4 claims of runs made before kinds are not counted (2 of them pass)" in text
    assert text.index("`beta`") < text.index("`alpha`")
    assert "No reference run yet: `gamma`." in text
    assert "| sink | — | 0.78 (1k) | 0.9047 | >= 0.8 | PASS |" in text
    assert "| drain \\| ratio | — | — | 1.235e-7 | <= 0.35 | FAIL |" in text
    assert "| ratio | — | Attn_&lt;s> > 0.5 | — | >= 1 | UNDEFINED: no clear sink |" in text
    assert "| all_active | — | yes | yes | == 1 | PASS |" in text


def test_the_headline_counts_reproductions_apart_from_the_other_kinds(tmp_path):
    from sinks_jax.claims import check, check_if

    claims = [
        check("sink forms", 0.9, ">=", 0.8, "0.78 (§3)", kind="reproduction"),
        check("drain", 0.5, "<=", 0.35, kind="reproduction"),
        check_if(False, "no sink", "ratio", 1.0, ">=", 1, kind="reproduction"),
        check("masses sum to 1", 1.0, "==", 1.0, kind="identity"),
        check("loss small", 0.01, "<=", 0.1, kind="sanity"),
    ]
    with pytest.raises(ValueError, match="unknown claim kind"):
        check("x", 1, ">=", 0, kind="reproductoin")
    write_run(tmp_path / "alpha" / "quick", "alpha", [c.as_dict() for c in claims])
    text = results_tables.render(tmp_path, order=["alpha"])
    assert "| `alpha` | 0 | 1/3 | 3 | 1 | 1 | 5 | 52 |" in text
    headline = "paper effects reproduced: 1 of 3 reproduction claims; other claims: 1 identity"
    assert headline in text
    assert "1 sanity" in text
    assert "| sink forms | reproduction | 0.78 (§3) | 0.9 | >= 0.8 | PASS |" in text
    assert "3/5 passed, 1 undefined; reproduced 1/3" in text
    page = tmp_path / "page.html"
    report_html.write(tmp_path, page)
    assert "paper effects reproduced: 1 of 3 reproduction claims" in page.read_text()
    bad = json.loads((tmp_path / "alpha" / "quick" / "metrics.json").read_text())
    bad["claims"][0]["kind"] = "proof"
    (tmp_path / "alpha" / "quick" / "metrics.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match="kind 'proof'"):
        results_tables.render(tmp_path, order=["alpha"])


def test_fmt_is_compact():
    assert results_tables.fmt(0.000123456) == "0.0001235"
    assert results_tables.fmt(123456.7) == "1.235e5"
    assert results_tables.fmt(3) == "3"
    assert results_tables.fmt(0.0) == "0"
    assert results_tables.fmt([1.0, 2.5, 3, 4, 5, 6, 7]) == "[1, 2.5, 3, 4, 5, 6, …]"


def test_check_and_write(reference, tmp_path, capsys):
    readme = tmp_path / "README.md"
    before, after = "# Title\n\nprose 1.0\n\n", "\n\n## Next\n\nmore prose\n"
    readme.write_text(f"{before}{results_tables.BEGIN}\nold table\n{results_tables.END}{after}")
    args = ["--root", str(reference), "--readme", str(readme)]

    assert results_tables.main([*args, "--check"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "stale" in err
    assert "--write" in err

    assert results_tables.main([*args, "--write"]) == 0
    text = readme.read_text()
    assert text.startswith(before + results_tables.BEGIN)
    assert text.endswith(results_tables.END + after)
    assert "| sink | — | 0.78 (1k) | 0.9047 |" in text
    assert results_tables.main([*args, "--check"]) == 0

    metrics_path = reference / "alpha" / "quick" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["claims"][0]["measured"] = 0.91
    metrics_path.write_text(json.dumps(metrics))
    capsys.readouterr()
    assert results_tables.main([*args, "--check"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "0.9047" in err

    readme.write_text("no markers here\n")
    assert results_tables.main([*args, "--check"]) == 2
    assert "must hold" in capsys.readouterr().err


def test_add_run_copies_only_small_outputs(tmp_path):
    run = write_run(tmp_path / "run", "bigram_backcopy", CLAIMS_B, figures=["probe.png"])
    (run / "attention_no_trigger.png").write_bytes(png())
    (run / "checkpoints" / "1000").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("{}\n")
    (run / "run.json").write_text(json.dumps({"status": "complete", "argv": ["--seed", "0"]}))
    dest = results_tables.add_run(run, tmp_path / "ref", wall_time_s=60.0)
    assert dest == tmp_path / "ref" / "bigram_backcopy" / "quick"
    names = sorted(p.name for p in dest.iterdir())
    assert names == ["attention_no_trigger.png", "config.json", "env.json", "metrics.json"]
    env = json.loads((dest / "env.json").read_text())
    assert env["seed"] == 0
    assert env["wall_time_s"] == 60.0
    assert env["source"] == str(run)
    assert env["jax"] == "0.10.2"
    assert env["argv"] == ["--seed", "0"]

    (run / "run.json").write_text(json.dumps({"status": "running"}))
    with pytest.raises(DataError, match="not a complete run"):
        results_tables.add_run(run, tmp_path / "ref")


@pytest.mark.parametrize("embed", [False, True])
def test_report_html_has_claims_figures_configs_and_environment(reference, tmp_path, embed):
    out = tmp_path / "pages" / "report.html"
    report_html.write(reference, out, embed=embed)
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert page.rstrip().endswith("</html>")
    assert "2 passed / 4 claims / 1 undefined (1 failed) in 2 module(s)" in page
    assert "drain | ratio" in page
    assert 'UNDEFINED<span class="why">no clear sink</span>' in page
    assert "<details><summary>config</summary>" in page
    assert "&quot;steps&quot;: 10" in page
    assert "3.11.7" in page
    assert "0.12.8" in page
    assert "platform" in page
    if embed:
        assert 'src="data:image/png;base64,' in page
    else:
        assert 'src="../reference/alpha/quick/a.png"' in page
    assert "a.png — alpha" in page
    assert "no run: bigram_backcopy, " in page


def test_experiments_all_writes_report_html(tmp_path, monkeypatch):
    def fake_run(module, preset, out_root, jobs=1):
        write_run(out_root / run_all.short_name(module), "adam_vs_sgd_peak", CLAIMS_B,
                  figures=["adam_vs_sgd.png"])  # fmt: skip
        return "ok"

    monkeypatch.setattr(run_all, "run_module", fake_run)
    assert run_all.main(["--only", "adam_vs_sgd_peak", "--out", str(tmp_path)]) == 0
    page = (tmp_path / "report.html").read_text()
    assert "1 passed / 1 claims / 0 undefined" in page
    assert 'src="adam_vs_sgd_peak/adam_vs_sgd.png"' in page
    assert (tmp_path / "summary.md").exists()


def test_stale_compares_reference_configs_with_the_current_presets(tmp_path):
    from proofs_numeric import adam_vs_sgd_peak
    from sinks_jax.config import to_dict

    config = json.loads(json.dumps(to_dict(adam_vs_sgd_peak.EXPERIMENT.presets["quick"])))
    folder = write_run(tmp_path / "adam_vs_sgd_peak" / "quick", "adam_vs_sgd_peak", CLAIMS_B)
    metrics = json.loads((folder / "metrics.json").read_text())
    (folder / "metrics.json").write_text(json.dumps({**metrics, "config": config}))
    assert results_tables.stale(tmp_path) == {"adam_vs_sgd_peak": []}
    first = next(k for k in config if k != "seed")
    config[first] = "changed"
    (folder / "metrics.json").write_text(json.dumps({**metrics, "config": config}))
    (diff,) = results_tables.stale(tmp_path)["adam_vs_sgd_peak"]
    assert diff.startswith(f"{first}: 'changed' -> ")


def test_table_blocks_are_filled_from_any_preset_and_checked(reference, tmp_path, capsys):
    cpu = reference / "gamma" / "cpu"
    write_run(cpu, "gamma", CLAIMS_B)
    metrics = json.loads((cpu / "metrics.json").read_text())
    metrics["tables"] = {"Candidates": [{"name": "a", "loss": 1.23456}, {"name": "b|c"}]}
    (cpu / "metrics.json").write_text(json.dumps(metrics))
    readme = tmp_path / "README.md"
    block = "<!-- table: gamma/cpu | Candidates -->\nstale\n<!-- table:end -->"
    missing = "<!-- table: delta/gpu | Runs -->\n<!-- table:end -->"
    readme.write_text(
        f"{results_tables.BEGIN}\n{results_tables.END}\n\n{block}\n\nprose\n\n{missing}\n"
    )
    args = ["--root", str(reference), "--readme", str(readme)]
    assert results_tables.main([*args, "--write"]) == 0
    text = readme.read_text()
    assert "| name | loss |\n| --- | --- |\n| a | 1.235 |\n| b\\|c | — |" in text
    assert "stale" not in text
    assert "No reference run yet: " in text  # delta/gpu has none
    assert text.endswith("<!-- table:end -->\n")
    assert results_tables.main([*args, "--check"]) == 0
    readme.write_text(text.replace("| a | 1.235 |", "| a | 9 |"))
    capsys.readouterr()
    assert results_tables.main([*args, "--check"]) == 1
    assert "table block is stale" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Tools that lose nothing: every destructive case runs inside a scratch folder two levels deep.


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def _tree(folder):
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _complete_run(folder, name="bigram_backcopy", **metrics):
    run = write_run(folder, name, CLAIMS_B)
    data = {**json.loads((run / "metrics.json").read_text()), **metrics}
    (run / "metrics.json").write_text(json.dumps(data))
    (run / "run.json").write_text(json.dumps({"sinks_jax_run": 1, "status": "complete"}))
    return run


@pytest.fixture
def scratch(tmp_path):
    """A scratch folder two levels deep, with a victim folder beside the reference root."""
    base = tmp_path / "scratch" / "inner"
    (base / "victim" / "quick").mkdir(parents=True)
    (base / "victim" / "quick" / "keep.txt").write_text("precious")
    (base / "ref").mkdir()
    return base


@pytest.mark.parametrize("where", ["dotdot", "absolute", "unknown", "bad preset", "no preset"])
def test_add_refuses_names_that_leave_the_root_and_deletes_nothing(scratch, capsys, where):
    experiment, preset = {
        "dotdot": ("../victim", "quick"),
        "absolute": (str(scratch / "victim"), "quick"),
        "unknown": ("victim", "quick"),
        "bad preset": ("bigram_backcopy", "../../victim/quick"),
        "no preset": ("bigram_backcopy", "nope"),
    }[where]
    run = _complete_run(scratch / "run", experiment=experiment, preset=preset)
    before = _tree(scratch / "victim")
    assert results_tables.main(["--add", str(run), "--root", str(scratch / "ref")]) == 2
    assert "metrics.json names" in _one_line(capsys) or where == "no preset"
    assert _tree(scratch / "victim") == before
    assert list((scratch / "ref").iterdir()) == []


def test_add_keeps_the_old_reference_when_the_new_one_fails(scratch, capsys, monkeypatch):
    root = scratch / "ref"
    old = results_tables.add_run(_complete_run(scratch / "old"), root)
    before = _tree(old)
    no_config = _complete_run(scratch / "new", config=None)  # and no config.json
    metrics = json.loads((no_config / "metrics.json").read_text())
    del metrics["config"]
    (no_config / "metrics.json").write_text(json.dumps(metrics))
    assert results_tables.main(["--add", str(no_config), "--root", str(root)]) == 2
    assert "no config" in _one_line(capsys)
    assert _tree(old) == before

    calls = []

    def copy_fails_half_way(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", str(dst))
        return shutil.copy2(src, dst)

    monkeypatch.setattr(results_tables.shutil, "copy2", copy_fails_half_way)
    (scratch / "old" / "report.md").write_text("# report\n")
    assert results_tables.main(["--add", str(scratch / "old"), "--root", str(root)]) == 2
    assert "No space left" in _one_line(capsys)
    assert _tree(old) == before
    assert sorted(p.name for p in old.parent.iterdir()) == ["quick"]  # no staging left behind


@pytest.mark.parametrize("mode", ["--write", "--check", None])
@pytest.mark.parametrize("root", ["missing", "empty"])
def test_a_root_without_runs_is_an_error_and_the_readme_is_untouched(
    tmp_path, monkeypatch, capsys, mode, root
):
    cwd = tmp_path / "scratch" / "cwd"  # a wrong working folder with a README of its own
    cwd.mkdir(parents=True)
    readme = cwd / "README.md"
    readme.write_text(
        f"{results_tables.BEGIN}\n| a | b |\n{results_tables.END}\n"
        "<!-- table: alpha/quick | T -->\n| x |\n| --- |\n| 1 |\n<!-- table:end -->\n"
    )
    before = readme.read_bytes()
    if root == "empty":
        (cwd / "results" / "reference").mkdir(parents=True)
    monkeypatch.chdir(cwd)
    assert results_tables.main([mode] if mode else []) == 2
    assert "reference run" in _one_line(capsys)
    assert readme.read_bytes() == before


def test_write_never_empties_a_table_block(reference, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(
        f"{results_tables.BEGIN}\n{results_tables.END}\n"
        "<!-- table: gamma/cpu | T -->\n| x |\n| --- |\n| 1 |\n<!-- table:end -->\n"
    )
    before = readme.read_bytes()
    for mode in ("--write", "--check"):
        assert results_tables.main([mode, "--root", str(reference), "--readme", str(readme)]) == 2
        assert "refusing to replace the README's table by nothing" in _one_line(capsys)
        assert readme.read_bytes() == before


BAD_FILES = {
    "truncated metrics": ("metrics.json", b'{"experiment": "alpha", "claims": [{"na'),
    "metrics a list": ("metrics.json", b"[1, 2]"),
    "claims not objects": ("metrics.json", b'{"claims": [1, "two"]}'),
    "claims a string": ("metrics.json", b'{"claims": "all passed"}'),
    "config a list": ("metrics.json", b'{"claims": [], "config": []}'),
    "wall time text": ("metrics.json", b'{"claims": [], "wall_time_s": "long"}'),
    "env not utf-8": ("env.json", b'{"date": "\xff\xfe"}'),
    "env a list": ("env.json", b"[]"),
    "env a folder": ("env.json", None),
}


@pytest.mark.parametrize("bad", sorted(BAD_FILES))
def test_malformed_reference_files_are_one_line_exit_2(reference, tmp_path, capsys, bad):
    name, content = BAD_FILES[bad]
    target = reference / "alpha" / "quick" / name
    if content is None:
        target.mkdir()
    else:
        target.write_bytes(content)
    readme = tmp_path / "README.md"
    readme.write_text(f"{results_tables.BEGIN}\nold\n{results_tables.END}\n")
    for mode in ([], ["--check"], ["--write"]):
        code = results_tables.main([*mode, "--root", str(reference), "--readme", str(readme)])
        assert code == 2
        assert name in _one_line(capsys)
    assert readme.read_text() == f"{results_tables.BEGIN}\nold\n{results_tables.END}\n"
    page = tmp_path / "page.html"
    assert report_html.main([str(reference), "--out", str(page)]) == 2
    assert name in _one_line(capsys)
    assert not page.exists()


@pytest.mark.parametrize("state", ["missing", "running", "locked", "mark a list"])
def test_add_of_a_missing_or_running_folder_is_one_line(tmp_path, capsys, state):
    from sinks_jax import run_dir

    run = _complete_run(tmp_path / "run")
    if state == "missing":
        run = tmp_path / "no_such_run"
    elif state == "running":
        (run / "run.json").write_text(json.dumps({"sinks_jax_run": 1, "status": "running"}))
    elif state == "mark a list":
        (run / "run.json").write_text("[]")
    with contextlib.ExitStack() as stack:
        if state == "locked":  # a resumed run: the old mark says complete, the lock is held
            stack.enter_context(run_dir.RunLock(run).acquire())
        assert results_tables.main(["--add", str(run), "--root", str(tmp_path / "ref")]) == 2
    expected = {
        "missing": "no metrics.json",
        "running": "not a complete run",
        "locked": "still writing",
        "mark a list": "not an object",
    }[state]
    assert expected in _one_line(capsys)
    assert not (tmp_path / "ref").exists()


def test_report_html_out_a_folder_writes_the_page_into_it(reference, tmp_path, capsys):
    pages = tmp_path / "pages"
    pages.mkdir()
    assert report_html.main([str(reference), "--out", str(pages)]) == 0
    assert (pages / "report.html").read_text().startswith("<!DOCTYPE html>")
    (tmp_path / "a_file").write_text("x")
    assert report_html.main([str(reference), "--out", str(tmp_path / "a_file" / "r.html")]) == 2
    assert "cannot write the page" in _one_line(capsys)


def test_report_html_embeds_only_regular_files_inside_the_root(reference, tmp_path):
    secret = tmp_path / "outside" / "secret.png"
    secret.parent.mkdir()
    secret.write_bytes(png() + b"SECRET-BYTES")
    (reference / "alpha" / "quick" / "linked.png").symlink_to(secret)
    (reference / "beta" / "quick" / "folder.png").mkdir()
    linked_module = tmp_path / "outside" / "gamma"
    write_run(linked_module, "gamma", CLAIMS_B, figures=["g.png"])
    (reference / "gamma").symlink_to(linked_module)
    out = tmp_path / "page.html"
    report_html.write(reference, out, embed=True)
    page = out.read_text()
    assert base64.b64encode(secret.read_bytes()).decode() not in page
    assert "linked.png" not in page
    assert "folder.png" not in page
    assert "g.png" not in page  # the linked module folder is not read
    assert "a.png — alpha" in page  # the real figure still is


def test_add_copies_no_link_and_writes_no_private_folder(scratch, capsys):
    secret = scratch / "secret.txt"
    secret.write_text("private key")
    run = _complete_run(scratch / "run")
    (run / "report.md").symlink_to(secret)
    assert results_tables.main(["--add", str(run), "--root", str(scratch / "ref")]) == 2
    assert "report.md is a link" in _one_line(capsys)
    assert list((scratch / "ref").iterdir()) == []
    (run / "report.md").unlink()
    dest = results_tables.add_run(run, scratch / "ref")
    mask = os.umask(0)
    os.umask(mask)
    assert dest.stat().st_mode & 0o777 == 0o777 & ~mask  # not mkdtemp's 0700


def test_add_refuses_a_module_folder_that_is_a_link_inside_the_root(scratch, capsys):
    root = scratch / "ref"
    other = results_tables.add_run(_complete_run(scratch / "a", name="lm_sinks"), root)
    before = _tree(other)
    (root / "depth_sweep").symlink_to(root / "lm_sinks")
    run = _complete_run(scratch / "b", name="depth_sweep")
    assert results_tables.main(["--add", str(run), "--root", str(root)]) == 2
    assert "goes through a link" in _one_line(capsys)
    assert _tree(other) == before


@pytest.mark.parametrize(
    "content",
    [b'{"claims": [], "wall_time_s": 1' + b"0" * 400 + b"}", b"[" * 100_000],
    ids=["huge number", "deep nesting"],
)
def test_json_python_cannot_hold_is_one_line(reference, tmp_path, capsys, content):
    (reference / "alpha" / "quick" / "metrics.json").write_bytes(content)
    assert results_tables.main(["--root", str(reference)]) == 2
    assert "metrics.json" in _one_line(capsys)


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit:
        results_tables.main(["--nope"])
    assert exit.value.code == 2
    assert "--nope" in _one_line(capsys)
    with pytest.raises(SystemExit) as exit:
        report_html.main([])
    assert exit.value.code == 2
    _one_line(capsys)


def test_experiments_all_reports_only_its_own_modules(tmp_path, monkeypatch):
    (tmp_path / "leftover").mkdir()
    (tmp_path / "leftover" / "metrics.json").write_text("[broken")  # an earlier invocation's

    def fake_run(module, preset, out_root, jobs=1):
        write_run(out_root / "adam_vs_sgd_peak", "adam_vs_sgd_peak", CLAIMS_B)
        return "ok"

    monkeypatch.setattr(run_all, "run_module", fake_run)
    assert run_all.main(["--only", "adam_vs_sgd_peak", "--out", str(tmp_path)]) == 0
    assert "1 passed / 1 claims" in (tmp_path / "report.html").read_text()
