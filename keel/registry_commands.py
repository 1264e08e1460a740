"""``keel models list`` and ``keel models promote``: the registry of this environment, from a shell."""

from rich.console import Console
from rich.table import Table

PRODUCTION_MODEL = ["models", "production_model"]


def _registry(settings):
    from resources.environments import registry_for

    return registry_for(settings)


def _value(metrics: dict, name: str) -> str:
    return f"{metrics[name]:.4f}" if name in metrics else "–"


def list_versions(settings, console: Console) -> int:
    registry = _registry(settings)
    versions = registry.versions()
    if not versions:
        console.print(
            f"No model versions in {registry.uri} yet: run `make demo` (or materialize a use case's model)."
        )
        return 0
    names = list(dict.fromkeys(name for version in versions for name in version.record.metrics))
    table = Table(
        title=f"Model registry: {registry.uri}",
        title_justify="left",
        caption="test: on the training run's test days; gate: on the promotion gate's window",
        caption_justify="left",
    )
    table.add_column("version", no_wrap=True)  # tags are copied from here: never split one
    table.add_column("stage", no_wrap=True)
    table.add_column("trained", no_wrap=True)
    table.add_column("train window", no_wrap=True)
    for moment in ("test", "gate"):
        for name in names:
            table.add_column(f"{moment} {name}", justify="right")  # the spec's names for them
    for version in versions:
        window = version.record.training_window
        verdict = version.verdict()
        gate = verdict.details["challenger"] if verdict else {}
        table.add_row(
            version.tag,
            f"[bold green]{version.stage}[/]" if version.stage == "production" else version.stage,
            version.created_at[:10],
            f"{window.train_start} +{(window.train_end - window.train_start).days + 1}d",
            *(_value(version.record.metrics, name) for name in names),
            *(_value(gate, name) for name in names),
        )
    console.print(table)
    champion = registry.champion()
    if champion is not None:
        promotion = [e for e in champion.history if e.stage == "production"][-1]
        console.print(
            f"In production: {champion.tag}, since {promotion.at[:19]} by {promotion.by}: {promotion.reason}"
        )
    return 0


def promote(settings, tag: str, reason: str, console: Console) -> int:
    """Promote ``tag`` and tell Dagster, so the UI's models/production_model shows the change."""
    import dagster as dg

    from keel.local import dagster_instance
    from platform_assets.defs.fraud.models import promotion_metadata
    from resources.registry import RegistryError

    registry = _registry(settings)
    try:
        promotion = registry.promote(tag, reason=f"manual: {reason}")
    except RegistryError as refused:
        console.print(f"[red]Not promoted:[/] {refused}")
        return 1
    with dagster_instance(settings) as instance:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                asset_key=PRODUCTION_MODEL, metadata=promotion_metadata(registry, promotion)
            )
        )
    console.print(f"{tag} is in production (it replaced {promotion.details['replaces'] or 'nothing'}).")
    console.print(
        f"Recorded in {registry.uri} and in Dagster ({instance.root_directory}) as a materialization."
    )
    return 0


def reproduce(settings, tag: str, console: Console) -> int:
    """Train ``tag`` again from its record; exit 0 only if the data and every metric are the same."""
    from platform_assets.defs.fraud.reproduce import reproduce as train_again
    from resources.registry import RegistryError
    from resources.warehouse import Warehouse

    try:
        version = _registry(settings).version(tag)
    except RegistryError as error:
        console.print(f"[red]{error}[/]")
        return 2
    with Warehouse(path=settings.warehouse_path).connect() as connection:
        result = train_again(tag, version.record, connection)
    window = version.record.training_window
    table = Table(
        title=f"Reproducing {tag} (train {window.train_start} .. {window.train_end}, "
        f"test {window.test_start} .. {window.test_end})"
    )
    for column in ("metric", "recorded", "reproduced", ""):
        table.add_column(column)
    for name, recorded in result.recorded.items():
        again = result.reproduced.get(name)
        table.add_row(
            name,
            f"{recorded:.6f}",
            "-" if again is None else f"{again:.6f}",
            "=" if result.same(name) else "[red]differs[/]",
        )
    console.print(table)
    for difference in result.differences:
        console.print(f"[yellow]{difference}[/]")
    if result.reproduced_exactly:
        console.print(f"[green]{tag} reproduced: same data, same metrics.[/]")
        return 0
    console.print(f"[red]{tag} was not reproduced[/]: see the differences above.")
    return 1
