"""Prompt templates: loading, rendering, history truncation, placeholders and the cacheable prefix."""

import pytest

from data_scripts.prompts import (
    HISTORY_TOKEN,
    ITEM_TOKEN,
    USER_TOKEN,
    load_template,
    render_prompt,
    split_prompt,
)

ROW = {"history_titles": [f"Movie {i} (199{i})" for i in range(12)], "title": "Alien (1979)"}


def test_bundled_collm_template_matches_collm_wording():
    template = load_template("collm_ml1m")
    prompt = render_prompt(template, ROW)
    history = ", ".join(f"Movie {i} (199{i})" for i in range(2, 12))  # the 10 most recent, oldest first
    assert prompt == (
        f"#Question: A user has given high ratings to the following movies: {history}. Additionally, we have "
        f"information about the user's preferences encoded in the feature {USER_TOKEN}. Using all available "
        "information, make a prediction about whether the user would enjoy the movie titled Alien (1979) with the "
        f'feature {ITEM_TOKEN}? Answer with "Yes" or "No". \n#Answer:'
    )


@pytest.mark.parametrize("name", ["collm_ml1m", "tallrec_ml1m", "collm_book", "tallrec_book"])
def test_all_bundled_templates_load(name):
    template = load_template(name)
    assert template.endswith("#Answer:") and "{title}" in template
    assert ("{user}" in template) == name.startswith("collm")
    assert ("books" in template) == name.endswith("book")


def test_truncation_tokens_and_history_placeholders():
    template = load_template("tallrec_ml1m")
    prompt = render_prompt(template, ROW, max_history=3)
    assert "movies: Movie 9 (1999), Movie 10 (19910), Movie 11 (19911). Using" in prompt
    assert USER_TOKEN not in prompt
    empty = render_prompt(template, {"history_titles": [], "title": "X"}, max_history=3)
    assert "movies: . Using" in empty
    assert "movies: . Using" in render_prompt(template, ROW, max_history=0)
    short = render_prompt(template, {"history_titles": ["A (1990)", "B (1991)"], "title": "X"}, max_history=10)
    assert "movies: A (1990), B (1991). Using" in short  # a history shorter than max_history is kept whole
    with_tokens = render_prompt(load_template("collm_ml1m"), ROW, max_history=2, tokens_per_entity=3, with_history_tokens=True)
    assert f"Movie 10 (19910) {HISTORY_TOKEN * 3}, Movie 11 (19911) {HISTORY_TOKEN * 3}." in with_tokens
    assert with_tokens.count(USER_TOKEN) == 3 and with_tokens.count(ITEM_TOKEN) == 3
    assert with_tokens.count(HISTORY_TOKEN) == 6


def test_braces_in_titles_are_safe():
    row = {"history_titles": ["{title} {user}"], "title": "A {item} B"}
    prompt = render_prompt("H: {history} U: {user} T: {title} I: {item}", row)
    assert prompt == f"H: {{title}} {{user}} U: {USER_TOKEN} T: A {{item}} B I: {ITEM_TOKEN}"


def test_split_prompt_prefix_is_user_only():
    template = load_template("collm_ml1m")
    prefix, suffix = split_prompt(template, ROW, max_history=4)
    assert prefix + suffix == render_prompt(template, ROW, max_history=4)
    assert prefix.endswith("the movie titled ") and suffix.startswith("Alien (1979) with the feature")
    other_prefix, _ = split_prompt(template, dict(ROW, title="Heat (1995)"), max_history=4)
    assert other_prefix == prefix
    prefix, suffix = split_prompt("{{literal}} {history} / {item} then {title}", ROW, max_history=1)
    assert prefix == "{literal} Movie 11 (19911) / " and suffix == f"{ITEM_TOKEN} then Alien (1979)"


@pytest.mark.parametrize(
    "template, message",
    [
        ("{title} {history}", r"puts \{history\} after \{title\}"),
        ("{history} {item} {user} {title}", r"puts \{user\} after \{item\}"),
        ("{history} {genre} {title}", r"field \{genre\} is unknown"),
        ("{history}", r"no \{title\} field"),
        ("{title:>10}", "format spec"),
    ],
)
def test_bad_templates(template, message):
    with pytest.raises(ValueError, match=message):
        render_prompt(template, ROW)


def test_load_template_by_path_and_errors(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("Likes: {history}. Would like {title}?\n")
    assert load_template(str(path)) == "Likes: {history}. Would like {title}?"
    with pytest.raises(FileNotFoundError, match="bundled templates: .*collm_ml1m"):
        load_template("no_such_template")
    with pytest.raises(ValueError, match="missing field"):
        render_prompt("{title}", {"title": "x"})
