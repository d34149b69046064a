use aya::programs::{TestRun, TestRunOptions};
fn main() -> anyhow::Result<()> {
    let dp = wgbpf::dataplane::Dataplane::load(&wgbpf::dataplane::LoadOptions {
        l2_hdr_len: 14,
        ..Default::default()
    })?;
    let prog = dp.program("wgbpf_ingress")?;
    let mut pkt = vec![0u8; 14 + 40];
    pkt[12] = 0x08;
    pkt[13] = 0;
    pkt[14] = 0x45;
    pkt[16] = 0;
    pkt[17] = 40;
    pkt[23] = 6;
    pkt[26..30].copy_from_slice(&[10, 0, 0, 1]);
    pkt[30..34].copy_from_slice(&[10, 0, 0, 2]);
    pkt[34..36].copy_from_slice(&1234u16.to_be_bytes());
    pkt[36..38].copy_from_slice(&80u16.to_be_bytes());
    let r = prog.test_run(TestRunOptions {
        data_in: Some(&pkt),
        repeat: 1,
        ..Default::default()
    })?;
    println!("{r:?}");
    Ok(())
}
