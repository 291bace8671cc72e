"""Hypothesis strategies the property tests share."""

from __future__ import annotations

from hypothesis import strategies as st

# Every code point, surrogates included, with the characters FreeSWITCH reads weighted up.
FREESWITCH_METACHARACTERS = list("${}[]()',|^\\\" \n\r\t\x00=:;@/&!~%#*?+")


def hostile_text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(
        st.one_of(
            st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF),
            st.sampled_from(FREESWITCH_METACHARACTERS),
        ),
        max_size=max_size,
    )
