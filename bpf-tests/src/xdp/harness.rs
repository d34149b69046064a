//! The guard loaded with private maps, frames run through it, and its
//! counters.

use anyhow::{Context, Result};
use aya::programs::{TestRun, TestRunOptions};
use wgbpf::dataplane::xdp_guard::{GuardConfig, GuardLoadOptions, GuardStats, XdpGuard};
use wgbpf_common::xdp::{names, xdp_stat, XdpConfig};

/// The guard loaded with private maps (nothing attached).
pub struct GuardHarness {
    pub guard: XdpGuard,
}

impl GuardHarness {
    /// Loaded and configured with `cfg`.
    pub fn new(cfg: &GuardConfig) -> Result<Self> {
        let mut guard = XdpGuard::load(&GuardLoadOptions::default())
            .context("loading the XDP guard (are you root?)")?;
        guard.maps.configure(cfg)?;
        Ok(Self { guard })
    }

    pub fn configure(&mut self, cfg: &GuardConfig) -> Result<()> {
        Ok(self.guard.maps.configure(cfg)?)
    }

    /// Sets the program's test clock (ns; 0 = the real clock).
    pub fn set_clock(&mut self, ns: u64) -> Result<()> {
        let mut raw: XdpConfig = self.guard.maps.read_raw()?;
        raw.clock_ns = ns;
        Ok(self.guard.maps.write_raw(raw)?)
    }

    /// Runs one frame; returns the program's verdict.
    pub fn run(&self, frame: &[u8]) -> Result<u32> {
        Ok(self.run_repeat(frame, 1)?.0)
    }

    /// Runs a frame `repeat` times; returns (verdict, mean ns per run).
    pub fn run_repeat(&self, frame: &[u8], repeat: u32) -> Result<(u32, u64)> {
        let prog = self.guard.program(names::PROG_GUARD)?;
        let mut out = vec![0u8; frame.len() + 256];
        let r = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..Default::default()
        })?;
        // The guard never rewrites a packet.
        assert_eq!(
            &out[..frame.len()],
            frame,
            "the guard changed the frame's bytes"
        );
        Ok((r.return_value, r.duration.as_nanos() as u64))
    }

    pub fn stats(&self) -> Result<GuardStats> {
        Ok(self.guard.maps.stats()?)
    }

    /// Runs one frame and returns its verdict and the one counter it moved
    /// (`None` when it moved none), failing if it moved more than one.
    pub fn judge(&self, frame: &[u8]) -> Result<(u32, Option<u32>)> {
        let before = self.stats()?;
        let verdict = self.run(frame)?;
        let delta = self.stats()?.since(&before);
        let moved: Vec<u32> = (0..xdp_stat::COUNT)
            .filter(|i| delta.get(*i) != 0)
            .collect();
        anyhow::ensure!(
            moved.len() <= 1 && moved.iter().all(|i| delta.get(*i) == 1),
            "one frame moved counters {delta:?}"
        );
        Ok((verdict, moved.first().copied()))
    }
}
