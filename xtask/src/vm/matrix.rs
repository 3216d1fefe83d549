//! placeholder
use anyhow::Result;
pub fn run_matrix(_o: &super::TestOptions) -> Result<()> { Ok(()) }
