pub fn bench(_a: &BenchArgs) -> anyhow::Result<()> { anyhow::bail!("bench: being written") }
#[derive(clap::Args)] pub struct BenchArgs {}
