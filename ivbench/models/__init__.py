"""Model code that is not a system adapter: architectures, their loaders, training and inference
engines. A system in `ivbench/systems/` wraps a model from here behind the System API
(docs/architecture.md, "Package layout")."""
