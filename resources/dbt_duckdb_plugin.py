"""dbt-duckdb's plugin for Keel: dbt opens DuckDB as every Keel process does (``keel_core.warehouse_engine``).

dbt_project/profiles.yml names it in every target. Before dbt attaches the warehouse, it sets DuckDB's
extension directory to the installed packages' with auto-install off, loads the extensions, and, when
the target reads the lake on S3 (``s3: true``), gives DuckDB the AWS SDK's credentials and endpoint.
"""

from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin

from keel_core import warehouse_engine


class Plugin(BasePlugin):
    def initialize(self, plugin_config: dict[str, Any]) -> None:
        self.s3 = str(plugin_config.get("s3", False)).lower() == "true"
        self.lake = str(plugin_config.get("lake", False)).lower() == "true"

    def update_connection_config(self, creds, config: dict[str, Any]) -> None:
        config.update(warehouse_engine.engine_config())

    def configure_connection(self, conn) -> None:
        warehouse_engine.prepare(conn, s3=self.s3, lake=self.lake)
