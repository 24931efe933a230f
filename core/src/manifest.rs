//! Manifests: YAML files read and validated into a `DesiredState`.
