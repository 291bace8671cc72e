"""The ids the bridge issues, as pydantic types for the API edge: a prefix, then letters and digits
(a ULID), so an id is never more than a word to FreeSWITCH or a Redis key (docs/security.md)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field


def _id_type(prefix: str) -> Any:
    return Annotated[str, Field(pattern=rf"^{prefix}[0-9A-Za-z]{{1,64}}$", max_length=80)]


CampaignId = _id_type("cmp_")
LeadId = _id_type("lead_")
VoiceAgentId = _id_type("va_")
