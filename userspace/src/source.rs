//! The mesh file as every command reads it: parsed and resolved
//! ([`crate::mesh`]), then its includes applied ([`crate::import`]). Above
//! both, so that neither imports the other.

use std::path::Path;

use crate::{
    import,
    mesh::{self, Mesh, MeshError},
};

/// Reads the mesh file at `path` with its includes applied.
pub fn load(path: &Path) -> Result<Mesh, MeshError> {
    let mut m = mesh::load(path)?;
    import::apply_includes(&path.display().to_string(), &mut m)?;
    Ok(m)
}

/// [`load`] for text already read; includes are found relative to `file`.
pub fn parse(file: &str, text: &str) -> Result<Mesh, MeshError> {
    let mut m = mesh::parse(file, text)?;
    import::apply_includes(file, &mut m)?;
    Ok(m)
}
