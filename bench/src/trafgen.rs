//! trafgen (netsniff-ng) floods through a test link: the packets' configuration and the
//! command that sends them.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use allowlist_tests::netns::{CLIENT_IF, SERVER_IF, SERVER_V4, TestLink};
use anyhow::Context as _;

use crate::veth::mac;

/// A flood ready to send: its configuration in a temporary file, removed when dropped.
pub struct TrafgenFlood {
    file: PathBuf,
    argv: Vec<String>,
}

impl TrafgenFlood {
    /// `packets` UDP packets to the server's port 9 from each of `sources` in turn, out of
    /// the client's interface of `link`, sent by trafgen on one CPU as fast as it goes.
    pub fn udp(link: &TestLink, sources: &[Ipv4Addr], packets: u64) -> anyhow::Result<Self> {
        let (to, from) = (mac(&link.server, SERVER_IF)?, mac(&link.client, CLIENT_IF)?);
        let mut config = String::with_capacity(sources.len() * 128);
        for source in sources {
            writeln!(
                config,
                "{{ eth(da={to}, sa={from}), ipv4(saddr={source}, daddr={SERVER_V4}), \
                 udp(sp=4000, dp=9), fill(0x00, 18) }}"
            )?;
        }
        let file = std::env::temp_dir().join(format!(
            "allowlist-bench-{}-{}.trafgen",
            std::process::id(),
            link.client.name()
        ));
        std::fs::write(&file, config).with_context(|| format!("writing {}", file.display()))?;
        let argv = vec![
            "nsenter".to_owned(),
            format!("--net={}", link.client.path()),
            "trafgen".to_owned(),
            "-o".to_owned(),
            CLIENT_IF.to_owned(),
            "-i".to_owned(),
            file.display().to_string(),
            "-n".to_owned(),
            packets.to_string(),
            "-P".to_owned(),
            "1".to_owned(),
            // A rate (-b) makes trafgen send packet by packet, which rides out a full veth
            // ring; its TX_RING path gives up with EAGAIN. The rate is above what one CPU
            // reaches here: the fastest the machine gives.
            "-b".to_owned(),
            "5000000pps".to_owned(),
            "-C".to_owned(),
        ];
        Ok(TrafgenFlood { file, argv })
    }

    /// The command that sends the flood.
    pub fn argv(&self) -> &[String] {
        &self.argv
    }
}

impl Drop for TrafgenFlood {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}
