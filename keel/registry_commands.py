"""``keel models list``, ``keel models promote`` and ``keel reproduce``: the registry of this
environment, from a shell, for every use case's model (the tag says which: ``<model>:<version>``)."""

from rich.console import Console
from rich.table import Table


def _registry(settings):
    from resources.environments import registry_for

    return registry_for(settings)


def _use_case_of(tag: str):
    """The declared use case whose model ``tag`` is a version of, as (spec, references), or None."""
    from platform_assets.components.use_case import declared

    model = tag.partition(":")[0]
    found = [(spec, refs) for spec, refs in declared().values() if (spec.model_name or spec.name) == model]
    return found[0] if found else None


def _value(metrics: dict, name: str) -> str:
    return f"{metrics[name]:.4f}" if name in metrics else "–"


def list_versions(settings, console: Console) -> int:
    namespace = _registry(settings)
    models = namespace.models()
    if not models:
        console.print(
            f"No model versions in {namespace.lake.uri}/registry yet: run `make demo` (or materialize a "
            "use case's model)."
        )
        return 0
    for model in models:
        _list_model(namespace.of(model), console)
    return 0


def _list_model(registry, console: Console) -> None:
    versions = registry.versions()
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


def promote(settings, tag: str, reason: str, console: Console) -> int:
    """Promote ``tag`` and tell Dagster, so the UI's ``<use case>/production_model`` shows the change."""
    import dagster as dg

    from keel.local import dagster_instance
    from platform_assets.handover import promotion_metadata
    from resources.registry import RegistryError

    try:
        registry = _registry(settings).of_tag(tag)
        promotion = registry.promote(tag, reason=f"manual: {reason}")
    except RegistryError as refused:
        console.print(f"[red]Not promoted:[/] {refused}")
        return 1
    use_case = _use_case_of(tag)
    if use_case is None:
        console.print(f"{tag} is in production; no use case declares its model, so no asset records it.")
        return 0
    production = dg.AssetKey([use_case[0].name, "production_model"])
    with dagster_instance(settings) as instance:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=production, metadata=promotion_metadata(registry, promotion))
        )
    console.print(f"{tag} is in production (it replaced {promotion.details['replaces'] or 'nothing'}).")
    console.print(
        f"Recorded in {registry.uri} and in Dagster ({instance.root_directory}) as a materialization."
    )
    return 0


def reproduce(settings, tag: str, console: Console, current_data: bool = False) -> int:
    """Train ``tag`` again from its record; exit 0 only if the data and every metric are the same.
    It reads the DuckLake snapshot the version was trained at, if it recorded one, unless
    ``current_data``: then the warehouse as it is, and what changed since is named."""
    import dagster as dg

    from platform_assets.components.plan import Plan
    from platform_assets.components.reproduce import reproduce as train_again
    from resources.registry import RegistryError
    from resources.warehouse import Warehouse

    try:
        version = _registry(settings).of_tag(tag).version(tag)
    except RegistryError as error:
        console.print(f"[red]{error}[/]")
        return 2
    use_case = _use_case_of(tag)
    if use_case is None:
        console.print(f"[red]No use case declares the model of {tag}[/]: nothing knows how to train it.")
        return 2
    snapshot = None if current_data else version.record.warehouse_snapshot
    if snapshot is not None:
        console.print(
            f"Reading the warehouse at snapshot {snapshot}, as {tag} was trained (--current-data: now)."
        )
    try:
        with Warehouse.at(settings.warehouse).connect(snapshot=snapshot) as connection:
            result = train_again(Plan.of(*use_case), tag, version.record, connection)
    # A window's days or labels are not in the warehouse, or its snapshot was expired (SnapshotGone).
    except (dg.Failure, LookupError) as missing:
        console.print(
            f"[red]{tag} cannot be trained again here:[/] {getattr(missing, 'description', missing)}"
        )
        return 2
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
