"""The ingestion quality report: what each bag held, what was repaired, what was kept and why."""

from __future__ import annotations

from pydantic import BaseModel, Field


class TopicReport(BaseModel):
    """Timing of one topic."""

    messages: int = Field(description="Messages used (after repairs).")
    rate_hz: float = Field(description="Observed rate: 1 / mean period, gaps excluded.")
    largest_gap_s: float = Field(description="Longest silence between two messages, s.")
    jitter_s: float = Field(description="Std of the period, gaps excluded, s.")


class EpisodeReport(BaseModel):
    """One episode found in a bag."""

    start_s: float = Field(description="Episode start, s since the bag's first message.")
    kept: bool = Field(description="Whether it went into the dataset.")
    reason: str = Field(description="How it ended (reached, gap, estop, time_limit, ...) or why it was dropped.")
    steps: int = Field(0, description="Control steps kept.")
    success: bool = Field(False, description="The reach rule fired.")
    controller: str | None = Field(None, description="Controller named by the start marker.")
    actions_held: int = Field(0, description="Periods without a fresh command (previous command held).")
    actions_clipped: int = Field(
        0, description="Commands beyond the action limits (torque, velocity or position), clipped."
    )
    actions_snapped: int = Field(0, description="Commands off the discrete torque grid, snapped to the nearest action.")


class BagReport(BaseModel):
    """One source bag."""

    bag: str = Field(description="Bag folder (or bare .mcap file).")
    sha256: dict[str, str] = Field(description="sha256 of every file of the bag.")
    skipped: str | None = Field(None, description="Why the whole bag was skipped, if it was.")
    duration_s: float = Field(0.0, description="Time between the first and last message, s.")
    message_counts: dict[str, int] = Field(default_factory=dict, description="Messages per used topic.")
    topics: dict[str, TopicReport] = Field(default_factory=dict, description="Timing per used topic.")
    repairs: dict[str, dict[str, int]] = Field(default_factory=dict, description="Repair counts per field.")
    bad_markers: int = Field(0, description="Episode markers that could not be parsed, ignored.")
    trailing_bytes: dict[str, int] = Field(
        default_factory=dict, description="Per topic: messages with bytes after their last CDR field, dropped."
    )
    episodes: list[EpisodeReport] = Field(default_factory=list, description="Every episode found.")


class QualityReport(BaseModel):
    """Everything one ``symgate ingest`` run saw."""

    dataset_id: str = Field(description="The Minari dataset id.")
    ingest_config_sha256: str = Field(description="Hash of the ingest config used.")
    state_topics: list[str] = Field(description="Topics that must flow continuously (gaps and jitter matter).")
    bags: list[BagReport] = Field(description="One entry per source bag.")

    @property
    def kept(self) -> list[EpisodeReport]:
        """Episodes that went into the dataset."""
        return [e for bag in self.bags for e in bag.episodes if e.kept]

    def markdown(self) -> str:
        """A short human summary."""
        kept = self.kept
        dropped = [e for bag in self.bags for e in bag.episodes if not e.kept]
        successes = sum(e.success for e in kept)
        lines = [
            f"# Ingest quality: `{self.dataset_id}`",
            "",
            f"{len(kept)} episodes kept ({sum(e.steps for e in kept)} steps), {len(dropped)} dropped, "
            f"{successes}/{len(kept)} reached the goal.",
            "",
            "| bag | duration | episodes kept/found | success | repairs | largest state gap | state jitter |",
            "|---|---|---|---|---|---|---|",
        ]
        for bag in self.bags:
            if bag.skipped:
                lines.append(f"| {bag.bag} | – | skipped: {bag.skipped} | | | | |")
                continue
            bag_kept = [e for e in bag.episodes if e.kept]
            repairs = sum(
                n for counts in bag.repairs.values() for name, n in counts.items() if name != "joint_order_differs"
            ) + sum(bag.trailing_bytes.values())
            reordered = max((c.get("joint_order_differs", 0) for c in bag.repairs.values()), default=0)
            states = [t for topic, t in bag.topics.items() if topic in self.state_topics]
            gap = max((t.largest_gap_s for t in states), default=0.0)
            jitter = max((t.jitter_s for t in states), default=0.0)
            lines.append(
                f"| {bag.bag} | {bag.duration_s:.1f} s | {len(bag_kept)}/{len(bag.episodes)} | "
                f"{sum(e.success for e in bag_kept)}/{len(bag_kept)} | {repairs}"
                f"{' (+ joints mapped by name)' if reordered else ''} | {gap * 1e3:.1f} ms | {jitter * 1e3:.2f} ms |"
            )
        if dropped:
            lines += ["", "Dropped: " + ", ".join(sorted({e.reason for e in dropped}))]
        return "\n".join(lines) + "\n"
