import torch

from vldistill.models.config import StudentConfig
from vldistill.models.factory import create_student, load_checkpoint, save_checkpoint
from vldistill.models.tokenizer import Tokenizer

CFG = StudentConfig(width=32, heads=2, text_layers=1, fusion_layers=1, context_length=16)


def setup():
    torch.manual_seed(0)
    model = create_student(CFG).eval()
    tokenizer = Tokenizer(16)
    ids, mask = tokenizer(["a red circle", "a blue square"])
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    return model, tokenizer, ids, mask, images


def test_closed_vocabulary_is_a_distribution_over_its_ids_plus_other():
    model, _, ids, mask, images = setup()
    vocab = ids[mask].unique().tolist()
    model.decoder.set_output_vocabulary(vocab)
    levels = model.encode_image(images).levels
    logits = model.decoder.logits(levels, ids, "forward")
    assert logits.shape[-1] == len(vocab) + 1
    # the log-likelihood uses the remapped targets of the closed vocabulary
    logp = model.decoder.token_log_probs(levels, ids, mask)
    expected = torch.log_softmax(logits[:, :-1], dim=-1)
    target = model.decoder.target_index[ids[:, 1:]]
    manual = expected.gather(2, target[..., None]).squeeze(-1) * mask[:, 1:]
    assert torch.allclose(logp[:, : manual.shape[1]], manual, atol=1e-6)


def test_tokens_outside_the_vocabulary_are_scored_as_other():
    model, tokenizer, ids, mask, images = setup()
    model.decoder.set_output_vocabulary(ids[0][mask[0]].tolist())  # only the first caption
    unseen = set(ids[1][mask[1]].tolist()) - set(ids[0][mask[0]].tolist())
    assert unseen
    index = model.decoder.target_index
    other = len(model.decoder.output_ids)
    assert all(index[t] == other for t in unseen)
    scores = model.slow_scores(images, ids, mask)
    assert torch.isfinite(scores).all()


def test_vocabulary_survives_a_checkpoint_and_can_be_cleared(tmp_path):
    model, _, ids, mask, images = setup()
    model.decoder.set_output_vocabulary(ids[mask].tolist())
    before = model.slow_scores(images, ids, mask)
    save_checkpoint(tmp_path / "m.safetensors", model)
    loaded, _, _ = load_checkpoint(tmp_path / "m.safetensors")
    assert loaded.decoder.output_vocabulary() == model.decoder.output_vocabulary()
    assert torch.equal(loaded.slow_scores(images, ids, mask), before)
    loaded.decoder.set_output_vocabulary(None)
    levels = loaded.encode_image(images).levels
    assert loaded.decoder.logits(levels, ids, "forward").shape[-1] == 49408
