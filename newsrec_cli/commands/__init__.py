"""The command layer: one Typer module per subcommand. Parses, calls the engine, renders."""
