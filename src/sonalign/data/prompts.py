"""Prompt templates that turn class labels into captions (label-only sets train and zero-shot with them)."""

from __future__ import annotations

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

TEMPLATES: dict[str, str] = {
    "sound": "the sound of {label}",
    "digit": "a person saying the number {label}",
    "emotion": "a person speaking with {label}",
    "plain": "{label}",
}


def label_text(label: str) -> str:
    """Human-readable form of a label: digits become words, dashes and underscores spaces."""
    label = str(label)
    if label.isdigit() and int(label) < 10:
        return DIGIT_WORDS[int(label)]
    return label.replace("_", " ").replace("-", " ")


def guess_template(labels: list[str]) -> str:
    """Pick a template name from the label set (digits, emotions, otherwise sounds)."""
    names = {str(l).lower() for l in labels}
    if names and all(n.isdigit() for n in names):
        return "digit"
    if names & {"anger", "happiness", "sadness", "neutral", "fear", "disgust", "boredom"}:
        return "emotion"
    return "sound"


def render(template: str, label: str) -> str:
    pattern = TEMPLATES.get(template, template)
    if "{label}" not in pattern:
        raise ValueError(f"prompt template {template!r} must contain '{{label}}' or be one of {sorted(TEMPLATES)}")
    return pattern.format(label=label_text(label))
