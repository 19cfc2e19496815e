"""runner-estate: config, routing-table compiler, CLI and offline harnesses."""
