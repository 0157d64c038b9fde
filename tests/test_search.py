"""The search command on the tiny run: ranked output, re-ranking and a new image folder."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from readme_commands import commands

from vldistill.data.images import image_table
from vldistill.data.manifest import manifest_path
from vldistill.models.factory import load_fast, load_slow
from vldistill.models.tokenizer import Tokenizer
from vldistill.search import (
    Collection,
    decode_rows,
    folder_table,
    main,
    parse_args,
    run_collection,
    run_files,
    search_collection,
)

QUERY = "a red circle left of a blue square"


def run_search(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def exact_fast_scores(files, query: str) -> np.ndarray:
    """Every gallery image's h_fast for the query, from the model itself, not the index."""
    fast, _ = load_fast(files.fast)
    collection = run_collection(files, "test")
    with torch.no_grad():
        text = fast.encode_text(*Tokenizer(fast.cfg.context_length)(query))
        images = torch.from_numpy(collection.index.reconstruct_n(0, collection.index.ntotal))
    return (images @ text[0]).numpy()


def test_search_lists_the_fast_top_k_of_the_runs_gallery(tiny_run, capsys):
    code, out, err = run_search(capsys, QUERY, "--run", str(tiny_run), "--dataset", "tiny",
                                "-k", "5", "--json")
    assert code == 0, err
    result = json.loads(out)
    hits = result["hits"]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    files = run_files(tiny_run, "tiny", 0, "fast_distilled")
    table = image_table([manifest_path(files.data, "test", "images")])
    assert result["gallery"] == len(table)
    exact = exact_fast_scores(files, QUERY)
    # the listed images are the exact top 5 (their scores are the 5 highest of the gallery)
    np.testing.assert_allclose(scores, np.sort(exact)[::-1][:5], rtol=1e-5, atol=1e-6)
    for hit in hits:
        row = table["image_id"].to_list().index(hit["image_id"])
        assert hit["score"] == pytest.approx(float(exact[row]), abs=1e-5)
        assert hit["path"] == str(files.data / table["image_path"][row])
    assert set(result["latency_ms"]) == {"encode", "search", "total"}


def test_rerank_reorders_the_fast_candidates_by_slow_plus_beta_fast(tiny_run, capsys):
    common = (QUERY, "--run", str(tiny_run), "--dataset", "tiny", "--json")
    _, fast_out, _ = run_search(capsys, *common, "-k", "8")
    code, out, err = run_search(capsys, *common, "-k", "4", "--rerank", "8", "--beta", "0.5")
    assert code == 0, err
    candidates = {h["image_id"] for h in json.loads(fast_out)["hits"]}
    hits = json.loads(out)["hits"]
    assert len(hits) == 4 and {h["image_id"] for h in hits} <= candidates
    for hit in hits:
        assert hit["score"] == pytest.approx(hit["slow_score"] + 0.5 * hit["fast_score"],
                                             abs=1e-5)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    # h_slow as the evaluation computes it: the caption's score with each candidate's pyramid
    files = run_files(tiny_run, "tiny", 0, "fast_distilled")
    slow, directions = load_slow(files.slow)
    collection = run_collection(files, "test")
    row = collection.table["image_id"].to_list().index(hits[0]["image_id"])
    pixels = decode_rows(collection.root, collection.table[[row]], slow.cfg.image_size,
                         slow.cfg.frames)
    ids, mask = Tokenizer(slow.cfg.context_length)(QUERY)
    with torch.no_grad():
        expected = slow.decoder.pairwise_scores(slow.encode_image(pixels).levels, ids, mask,
                                                directions=directions)
    assert hits[0]["slow_score"] == pytest.approx(float(expected[0, 0]), abs=1e-4)
    # the plain-text form names the Slow score column and the re-ranking latency
    code, out, _ = run_search(capsys, *common[:-1], "-k", "2", "--rerank", "4")
    assert code == 0 and "slow" in out.splitlines()[1] and "rerank" in out.splitlines()[-1]


def test_a_new_image_folder_is_embedded_indexed_and_searched(tiny_run, tmp_path, capsys):
    files = run_files(tiny_run, "tiny", 0, "fast")
    gallery = run_collection(files, "test")
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    picked = gallery.table[:6]
    for i, rel_path in enumerate(picked["image_path"]):
        target = folder / ("nested" if i % 2 else "") / f"{i}.png"
        shutil.copy(gallery.root / rel_path, target)
    (folder / "notes.txt").write_text("not an image")
    index_path = tmp_path / "photos.faiss"
    code, out, err = run_search(capsys, QUERY, "--images", str(folder), "--fast", str(files.fast),
                                "-k", "3", "--save-index", str(index_path), "--json")
    assert code == 0, err
    hits = json.loads(out)["hits"]
    assert len(hits) == 3 and index_path.exists()
    assert all(h["path"].startswith(str(folder)) and h["path"].endswith(".png") for h in hits)
    # an image scores the same whether it is found in the run's index or in the folder
    exact = exact_fast_scores(files, QUERY)
    for hit in hits:
        source = picked["image_path"][int(hit["image_id"].rsplit("/", 1)[-1].split(".")[0])]
        row = gallery.table["image_path"].to_list().index(source)
        assert hit["score"] == pytest.approx(float(exact[row]), abs=1e-5)


def test_folder_table_keeps_only_pictures_in_a_stable_order(tmp_path):
    (tmp_path / "b").mkdir()
    for name in ("b/2.jpg", "1.PNG", "a.txt"):
        path = tmp_path / name
        if name.endswith("txt"):
            path.write_text("x")
        else:
            Image.new("RGB", (5, 3)).save(path, format="PNG")
    assert folder_table(tmp_path, frames=1)["image_path"].to_list() == ["1.PNG", "b/2.jpg"]
    with pytest.raises(ValueError, match="no files ending in"):
        folder_table(tmp_path / "b", frames=8)


def test_search_errors_say_what_to_build_or_pass(tiny_run, tmp_path, capsys):
    code, _, err = run_search(capsys, QUERY, "--run", str(tmp_path), "--dataset", "tiny")
    assert code == 2 and "snakemake --cores all" in err and "fast_distilled.safetensors" in err
    code, _, err = run_search(capsys, QUERY, "--run", str(tmp_path))
    assert code == 2 and "pass --dataset" in err
    code, _, err = run_search(capsys, QUERY, "--run", str(tiny_run), "--dataset", "tiny",
                              "--split", "train")
    assert code == 2 and "--split" in err and "index" in err
    code, _, err = run_search(capsys, "  ", "--run", str(tiny_run), "--dataset", "tiny")
    assert code == 2 and "empty" in err
    files = run_files(tiny_run, "tiny", 0, "fast")
    fast, _ = load_fast(files.fast)
    collection: Collection = run_collection(files, "test")
    with pytest.raises(ValueError, match="needs the Slow model"):
        search_collection(QUERY, fast, collection, k=5, rerank=10)


def test_the_readmes_search_commands_parse_and_the_first_runs(repo, tiny_run, capsys):
    searches = [c.argv[3:] for c in commands(repo, ".venv/bin/python")
                if c.argv[1:3] == ("-m", "vldistill.search")]
    assert len(searches) >= 3, "the README shows a run search, a re-ranked one and a folder one"
    for argv in searches:
        parse_args(argv)
    first = list(searches[0])
    first[first.index("--dataset") + 1] = "tiny"  # the tiny run's dataset, for the default's
    code, out, err = run_search(capsys, *first, "--run", str(tiny_run))
    assert code == 0, err
    assert len([line for line in out.splitlines() if line.strip().startswith(("1 ", "5 "))]) == 2
