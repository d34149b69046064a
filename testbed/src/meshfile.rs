//! A wgbpf mesh file describing a testbed mesh as seen from its gateway.

use crate::Testbed;

/// The `[interface]` and `[[peer]]` sections for the gateway of `mesh`,
/// followed by `policy` (TOML text with a `[policy]` table), for `wgbpf load`.
pub fn gateway_mesh_file(mesh: &Testbed, policy: &str) -> String {
    let gw = &mesh.gateway;
    let mut s = format!(
        "[interface]\nname = \"{}\"\naddresses = [\"{}/24\", \"{}/64\"]\n\n",
        gw.wg_if, gw.tunnel_v4, gw.tunnel_v6
    );
    for p in &mesh.peers {
        s += &format!(
            "[[peer]]\nname = \"{}\"\npublic_key = \"{}\"\nallowed_ips = [\"{}/32\", \"{}/128\"]\n\n",
            p.name, p.public_key, p.tunnel_v4, p.tunnel_v6
        );
    }
    s + policy
}
