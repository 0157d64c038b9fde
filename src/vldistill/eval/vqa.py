r"""VQA v2 accuracy as the official evaluation code computes it, plus classifier-head helpers.

The reference is ``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` of GT-Vision-Lab/VQA on
master, commit a013f0043c1e2cdc995922dfe257f7149aa9af06 ("Fixed processing answers bug",
2021-03-11): the code the VQA v2 evaluation publishes. Its answer processing is reproduced
literally, quirks included, because a number is only comparable with published VQA v2 results
if it is computed the same way. For one question:

* the prediction and every ground-truth answer get newline/tab -> space and ``strip``;
* only if the ground-truth answers are not all identical do the prediction and every answer
  get ``processPunctuation`` then ``processDigitArticle`` (``official_normalize_answer``). With
  identical answers nothing else happens: "Yes" scores 0 against ten "yes", "t-shirt" 1 against
  ten "t-shirt". (The Python 3 port on the ``feature/update_style`` branch predates the fix:
  it always processes the prediction and gives the answers punctuation only. Not followed.)
* acc_i = min(1, #other annotators matching / 3) leaving annotator i out, averaged over all
  10; the official code leaves out the one answer record (each has its own ``answer_id``), so
  exactly one annotator per term.

``processPunctuation``'s quirks are kept: a mark next to a space anywhere in the answer is
deleted, any other replaced by a space, and every mark is deleted when a digit-comma-digit
occurs anywhere ("1,000" -> "1000"); the period regex ``(?!<=\d)(\.)(?!\d)`` has a typo (a
lookahead for "<=digit", always true), so a period goes unless a digit follows ("5." -> "5",
"3.5" stays); its ``re.UNICODE`` lands in ``sub``'s count, so at most 32 periods go; ``\d``
means ASCII digits (Python 2 without that flag). ``processDigitArticle`` lower-cases, maps
number words "none"/"zero".."ten" to digits, drops "a"/"an"/"the", then expands contractions
("dont" -> "don't"; the capitalised keys never match once lower-cased).

Deliberate deviations, each tested:

* one ground-truth answer: the official leave-one-out leaves nothing and scores 0 whatever the
  prediction; here min(1, matches / 3) on that answer (the paper's formula without the
  average). VQA v2 always has 10 answers, so its scores are unaffected.
* ``normalize_gt=True`` first gives each ground-truth answer ``official_normalize_answer``: the
  VQA v2 release's answers were normalised so before the evaluation ever saw them; generated
  answers in raw annotator spellings ("Red", "two") were not. Off by default.
* the mean over annotators is an exact fraction (3 of 10 matching -> 27/30 = 0.9) rather than a
  float sum (the official 2-of-10 value is 0.5999999999999999, here 0.6); scores are fractions
  in [0, 1], not the official 100x rounded to 2 decimals.

``official_normalize_answer`` is the official processing of an answer. It is not
``vldistill.synthetic.language.answer_group_key``, which only groups the generator's annotator
spellings (case, surrounding punctuation, number words) to pick a majority answer.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "answer_vocabulary",
    "majority_answer_baseline",
    "official_normalize_answer",
    "soft_targets",
    "vocab_index",
    "vqa_accuracy",
    "vqa_score",
]

# The official vqaEval.py tables, reproduced entry for entry so scores match. The capitalised
# keys ("Im", "Ive", ...) never match because the text is lower-cased first; kept for fidelity.
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}  # fmt: skip

MANUAL_MAP: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip

ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})

# Order matters: each mark is deleted or spaced in turn. No apostrophe, colon or period here.
PUNCT: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
    ">", "<", "@", "`", ",", "?", "!",
)  # fmt: skip

# "(?!<=\d)" is the official code's typo for "(?<!\d)": as written it is a lookahead that always
# holds, so a period is removed whenever no digit follows it ("3.5" keeps it, "5." loses it).
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)", re.ASCII)
_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)", re.ASCII)
# The official call is periodStrip.sub("", text, re.UNICODE): the flag lands in ``count``.
_PERIOD_STRIP_COUNT = int(re.UNICODE)


def _process_punctuation(text: str) -> str:
    """Official ``processPunctuation``.

    Both tests look at the input text, not the text edited so far: a mark next to a space is
    deleted, any other is replaced by a space, and if a digit-comma-digit occurs anywhere every
    mark is deleted (so "1,000" -> "1000").
    """
    out = text
    digit_comma = _COMMA_STRIP.search(text) is not None
    for p in PUNCT:
        if p + " " in text or " " + p in text or digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, count=_PERIOD_STRIP_COUNT)


def _process_digit_article(text: str) -> str:
    """Official ``processDigitArticle``: number words, then articles, then contractions."""
    words = [MANUAL_MAP.get(word, word) for word in text.lower().split()]
    words = [CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES]
    return " ".join(words)


def _clean_whitespace(text: str) -> str:
    """What the official code does to every answer: newline/tab -> space, then ``strip``."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def official_normalize_answer(text: str) -> str:
    """An answer as the official code compares it when the annotators disagree: whitespace
    cleaned, ``processPunctuation``, then ``processDigitArticle``."""
    return _process_digit_article(_process_punctuation(_clean_whitespace(text)))


def _check_answers(answers: Sequence[str], where: str) -> list[str]:
    if isinstance(answers, str):
        raise TypeError(f"{where}: answers must be a sequence of strings, not one string")
    answers = list(answers)
    if not answers:
        raise ValueError(f"{where}: no ground-truth answers")
    return answers


def _accuracy(prediction: str, answers: list[str], normalize_gt: bool) -> float:
    if normalize_gt:
        answers = [official_normalize_answer(a) for a in answers]
    pred, answers = _clean_whitespace(prediction), [_clean_whitespace(a) for a in answers]
    # Official: everything is processed only when the (cleaned) answers disagree.
    if len(set(answers)) > 1:
        pred = _process_digit_article(_process_punctuation(pred))
        answers = [_process_digit_article(_process_punctuation(a)) for a in answers]
    hits = [a == pred for a in answers]
    matches = sum(hits)
    if len(answers) == 1:
        # The official leave-one-out leaves nothing here and scores every prediction 0; the
        # paper's min(1, #humans / 3) on the single answer is used instead.
        return min(3, matches) / 3
    # Leaving out answer i removes one match iff answer i matches. Integer sums and a single
    # division keep hand-checkable values exact (3 of 10 matching -> 27/30 == 0.9).
    return sum(min(3, matches - hit) for hit in hits) / (3 * len(answers))


def vqa_accuracy(prediction: str, answers: Sequence[str], *, normalize_gt: bool = False) -> float:
    """VQA accuracy of one prediction in [0, 1].

    For each ground-truth answer, the other answers are kept and acc_i = min(1, #matches / 3);
    the result is the mean over i. With 10 answers this is the official 10-choose-9 average.
    """
    if not isinstance(prediction, str):
        raise TypeError(f"prediction must be a string, got {type(prediction).__name__}")
    return _accuracy(prediction, _check_answers(answers, "question"), normalize_gt)


def vqa_score(
    predictions: Sequence[str],
    answers: Sequence[Sequence[str]],
    answer_types: Sequence[str] | None = None,
    *,
    normalize_gt: bool = False,
) -> dict[str, float | int]:
    """Mean VQA accuracy as a fraction in [0, 1] (the official code reports 100x, rounded).

    Returns ``accuracy`` and ``n``, and with ``answer_types`` also ``accuracy/<type>`` and
    ``n/<type>`` for each type, as the official per-answer-type breakdown.
    """
    n = len(predictions)
    if len(answers) != n:
        raise ValueError(f"{n} predictions but {len(answers)} answer lists")
    if answer_types is not None and len(answer_types) != n:
        raise ValueError(f"{n} predictions but {len(answer_types)} answer types")
    if n == 0:
        raise ValueError("no questions to score")
    scores = []
    for i, (pred, gts) in enumerate(zip(predictions, answers, strict=True)):
        if not isinstance(pred, str):
            raise TypeError(f"question {i}: prediction must be a string, got {type(pred).__name__}")
        scores.append(_accuracy(pred, _check_answers(gts, f"question {i}"), normalize_gt))
    result: dict[str, float | int] = {"accuracy": math.fsum(scores) / n, "n": n}
    if answer_types is not None:
        by_type: dict[str, list[float]] = defaultdict(list)
        for kind, score in zip(answer_types, scores, strict=True):
            by_type[str(kind)].append(score)
        for kind in sorted(by_type):
            result[f"accuracy/{kind}"] = math.fsum(by_type[kind]) / len(by_type[kind])
            result[f"n/{kind}"] = len(by_type[kind])
    return result


def answer_vocabulary(
    answers_lists: Iterable[Sequence[str]], min_count: int = 1, top_k: int | None = None
) -> list[str]:
    """Normalised answers for a classifier head, most frequent first, ties alphabetical.

    Frequency counts every annotator answer. Answers that normalise to "" (such as "the") are
    left out: an empty class is not an answer a head can give.
    """
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    counts: Counter[str] = Counter()
    for i, answers in enumerate(answers_lists):
        if isinstance(answers, str):
            raise TypeError(f"question {i}: answers must be a sequence of strings, not one string")
        counts.update(official_normalize_answer(a) for a in answers)
    counts.pop("", None)
    ranked = sorted((a for a, c in counts.items() if c >= min_count), key=lambda a: (-counts[a], a))
    return ranked if top_k is None else ranked[:top_k]


def vocab_index(vocab: Sequence[str]) -> dict[str, int]:
    """Answer -> class index; build it once and pass it to ``soft_targets`` in a loop."""
    index = {answer: i for i, answer in enumerate(vocab)}
    if len(index) != len(vocab):
        dupes = sorted(a for a, c in Counter(vocab).items() if c > 1)
        raise ValueError(f"vocabulary has duplicate answers: {dupes[:5]}")
    return index


def soft_targets(
    answers: Sequence[str], vocab: Sequence[str] | Mapping[str, int]
) -> list[tuple[int, float]]:
    """(class index, score) for each vocabulary answer given by the annotators, by index.

    The score is min(1, count / 3) on the full count, without the evaluation's leave-one-out,
    as the standard soft-label VQA classifier recipe trains. (BUTD's code uses a stepped variant,
    0.3 / 0.6 / 0.9 / 1.) Answers are normalised like ``answer_vocabulary`` normalises them;
    answers outside the vocabulary get no target.
    """
    if isinstance(answers, str):
        raise TypeError("answers must be a sequence of strings, not one string")
    index = vocab if isinstance(vocab, Mapping) else vocab_index(vocab)
    counts = Counter(official_normalize_answer(a) for a in answers)
    return sorted((index[a], min(3, c) / 3) for a, c in counts.items() if a in index)


def majority_answer_baseline(
    train_answers: Iterable[Sequence[str]],
    test_answers: Sequence[Sequence[str]],
    test_answer_types: Sequence[str] | None = None,
    *,
    normalize_gt: bool = False,
) -> dict[str, float | int | str]:
    """VQA accuracy on the test set of always giving the most frequent training answer.

    VQA has no formula for chance; this is the usual prior baseline, computed on the data. The
    answer is the top of ``answer_vocabulary(train_answers)`` and is returned under ``answer``.
    """
    top = answer_vocabulary(train_answers, top_k=1)
    if not top:
        raise ValueError("training answers are empty: no majority answer")
    preds = [top[0]] * len(test_answers)
    scores = vqa_score(preds, test_answers, test_answer_types, normalize_gt=normalize_gt)
    return {"answer": top[0], **scores}
