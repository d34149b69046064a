//! Loads the programs (prints how long the verifier took) and runs one
//! packet through: a quick check that the kernel accepts them.
use aya::programs::{TestRun, TestRunOptions};
fn main() -> anyhow::Result<()> {
    let t = std::time::Instant::now();
    let dp = wgbpf::dataplane::Dataplane::load(&wgbpf::dataplane::LoadOptions {
        l2_hdr_len: 14,
        // SMOKE_PROGRAM_LOG=trace: the programs' own log on, to count its
        // cost in the verifier.
        program_log: std::env::var("SMOKE_PROGRAM_LOG")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_default(),
        ..Default::default()
    })?;
    println!("load: {:?}", t.elapsed());
    for name in ["wgbpf_ingress", "wgbpf_egress"] {
        let info = dp.program(name)?.info()?;
        println!(
            "{name}: verifier processed {:?} instructions, {:?} bytes translated",
            info.verified_instruction_count(),
            info.size_translated()
        );
    }
    let prog = dp.program("wgbpf_ingress")?;
    let mut pkt = vec![0u8; 14 + 40];
    pkt[12] = 0x08;
    pkt[14] = 0x45;
    pkt[17] = 40;
    pkt[23] = 6;
    pkt[26..30].copy_from_slice(&[10, 0, 0, 1]);
    pkt[30..34].copy_from_slice(&[10, 0, 0, 2]);
    pkt[36..38].copy_from_slice(&80u16.to_be_bytes());
    let r = prog.test_run(TestRunOptions {
        data_in: Some(&pkt),
        repeat: 1,
        ..Default::default()
    })?;
    println!("{r:?}");
    if std::env::var_os("SMOKE_HOLD").is_some() {
        std::thread::sleep(std::time::Duration::from_secs(3));
    }
    Ok(())
}
