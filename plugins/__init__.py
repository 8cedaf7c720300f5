"""augforge's built-in strategy plugins. Each module here is a plugin like any third-party one:
it uses only augforge's public API and registers its strategies through the hook."""
