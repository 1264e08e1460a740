"""The hand-over between lifecycle steps: a step works on what its upstream materialization recorded
(the exact model version trained, the exact version judged), never on "the newest" of anything."""

from collections.abc import Iterator

import dagster as dg

from platform_assets.provenance import recorded
from resources.registry import APPROVED, ARCHIVED, PRODUCTION, Event, ModelRegistry


def produced_by(context: dg.AssetExecutionContext, key: dg.AssetKey, entry: str) -> tuple[str, str]:
    """``entry`` of the materialization of ``key`` this step follows (in this run, the one it just
    made; alone, the latest), and the run that made it: the hand-over between lifecycle steps."""
    records = context.instance.fetch_materializations(key, limit=1).records
    if not records:
        raise dg.Failure(
            f"{key.to_user_string()} was never materialized: materialize it first", allow_retries=False
        )
    metadata = records[0].asset_materialization.metadata
    if entry not in metadata:
        raise dg.Failure(
            f"the latest materialization of {key.to_user_string()} records no {entry}", allow_retries=False
        )
    return str(metadata[entry].value), records[0].run_id


def promote_or_keep(
    context: dg.AssetExecutionContext, registry: ModelRegistry, evaluation: dg.AssetKey
) -> Iterator[dg.MaterializeResult]:
    """The production-model step of a lifecycle: promote the version ``evaluation`` judged if the
    gate approved it, else record that the champion stays; before any promotion a refusal yields
    nothing, so what needs a production model is skipped."""
    tag, judged_in = produced_by(context, evaluation, "challenger")
    challenger = registry.version(tag)
    approval = challenger.approval()
    if approval is not None and challenger.stage == APPROVED:
        promotion = registry.promote(
            tag, reason=f"promotion gate {approval.reason}", run_id=context.run.run_id
        )
        yield dg.MaterializeResult(
            data_version=dg.DataVersion(tag),
            metadata={**recorded(context), **promotion_metadata(registry, promotion)},
        )
        return
    verdict = challenger.verdict()
    if challenger.stage in (PRODUCTION, ARCHIVED):
        refusal = f"it was promoted before and is {challenger.stage}"
    else:
        refusal = verdict.reason if verdict else f"not judged (stage {challenger.stage})"
    champion = registry.champion()
    if champion is None:
        context.log.warning(f"{tag} was not promoted ({refusal}) and no model is in production yet")
        return
    context.log.warning(f"{tag} was not promoted ({refusal}): {champion.tag} stays in production")
    yield dg.MaterializeResult(
        data_version=dg.DataVersion(champion.tag),
        metadata={
            **recorded(context),
            "promoted": False,
            "model_tag": champion.tag,
            "refused": tag,
            "refused_by_run": judged_in,
            "reason": refusal,
        },
    )


def promotion_metadata(registry: ModelRegistry, promotion: Event) -> dict:
    """What the UI shows for a promotion, by the gate or by ``keel models promote``: who, when, why,
    what it replaced, the gate's figures for it and the model card."""
    approval = registry.version(promotion.tag).approval()
    judged = approval.details.get("challenger") or {} if approval else {}
    return {
        "promoted": True,
        "model_tag": promotion.tag,
        "replaces": promotion.details["replaces"] or "none (first production model)",
        "promoted_by": promotion.by,
        "promoted_at": promotion.at,
        "reason": promotion.reason,
        **{f"gate_{metric}": value for metric, value in judged.items() if isinstance(value, float)},
        "model_card": dg.MetadataValue.md(registry.card(promotion.tag)),
        "model_card_path": dg.MetadataValue.path(registry.attachment_uri(promotion.tag, "model_card.md")),
    }
