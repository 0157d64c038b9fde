import torch

from vldistill.data.images import load_image_bank
from vldistill.data.manifest import manifest_path, read_manifest
from vldistill.data.synthetic import SyntheticConfig, generate
from vldistill.models.config import StudentConfig
from vldistill.models.factory import create_student
from vldistill.models.tokenizer import Tokenizer
from vldistill.train.loop import TrainConfig, train
from vldistill.train.pretrain import build_caption_corpus, caption_vocabulary, pretrain_loss


def test_pretraining_on_tiny_synthetic_captions_lowers_both_losses(tmp_path):
    counts = {"train": 16, "val": 2, "test": 2, "test_shifted": 2}
    generate(SyntheticConfig(counts=counts, captions_per_image=2), tmp_path, seed=0,
             progress=False)
    bank = load_image_bank(tmp_path, [manifest_path(tmp_path, "train", "images")], 64,
                           progress=False)
    captions = read_manifest(manifest_path(tmp_path, "train", "captions"), "captions")
    corpus = build_caption_corpus(captions, bank, Tokenizer(context_length=24))
    assert len(corpus) == 32 and corpus.has_negative.all()
    assert not torch.equal(corpus.ids, corpus.negative_ids)

    torch.manual_seed(0)
    cfg = StudentConfig(width=32, heads=2, text_layers=1, fusion_layers=1, decoder_layers=3,
                        context_length=24)
    model = create_student(cfg)
    vocabulary = caption_vocabulary(corpus)
    assert 10 < len(vocabulary) < 200
    model.decoder.set_output_vocabulary(vocabulary)
    history = train(
        model,
        lambda m, rows, step: pretrain_loss(m, corpus, bank, rows),
        len(corpus),
        TrainConfig(steps=40, batch_size=8, lr=1e-2, warmup_steps=3, checkpoint_every=40),
        tmp_path / "state.pt",
        progress=False,
    )
    first, last = history[:4], history[-4:]
    for key in ("caption", "loss"):
        assert sum(h[key] for h in last) < 0.8 * sum(h[key] for h in first), key
    assert all(0.0 <= h["itm_hard_negative_accuracy"] <= 1.0 for h in history)
