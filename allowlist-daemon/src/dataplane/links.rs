//! Links: attaching the programs to interfaces (XDP ingress, TC egress), taking over links an
//! earlier daemon pinned, pinning new ones, and letting go of interfaces no longer guarded.

use std::path::{Path, PathBuf};

use allowlist_common::{EGRESS_PROGRAM_NAME, PROGRAM_NAME};
use aya::Ebpf;
use aya::programs::links::{FdLink, LinkError, PinnedLink};
use aya::programs::tc::SchedClassifierLink;
use aya::programs::xdp::XdpLink;
use aya::programs::{ProgramError, SchedClassifier, TcAttachType, Xdp};

use super::error::{AdoptError, DataplaneError};
use super::load::program_mut;
use super::pins::{Pins, read_dir, remove_pin};
use super::sys::xdp_holder;
use super::types::{AttachMode, AttachedMode};

/// One attachment of the program to an interface; pinned links outlive it.
#[derive(Debug)]
pub struct Attachment {
    /// The interface name.
    pub interface: String,
    /// The mode the attachment got.
    pub mode: AttachedMode,
    /// The XDP link.
    _link: FdLink,
    /// The egress link, when replies pass.
    _egress: Option<FdLink>,
}

/// The object's programs and where their links are pinned: what attaching needs.
pub(super) struct Programs<'a> {
    /// The loaded object.
    pub(super) ebpf: &'a mut Ebpf,
    /// Where links are pinned; `None`: nowhere.
    pub(super) pins: Option<&'a Pins>,
}

impl Attachment {
    /// Attaches the XDP program of `programs` to `interface` and, with `replies`, the egress
    /// program that records the host's flows. A link pinned by an earlier daemon is taken
    /// over: the interface switches to this program in one step. Otherwise, in
    /// [`AttachMode::Auto`], native mode is tried first, then skb mode.
    pub(super) fn make(
        programs: &mut Programs<'_>,
        interface: &str,
        mode: AttachMode,
        replies: bool,
    ) -> Result<Attachment, DataplaneError> {
        let xdp_pin = format!("xdp_{interface}");
        let (link, attached) = match programs.adopt::<Xdp, XdpLink>(PROGRAM_NAME, &xdp_pin)? {
            Some(link) => (link, AttachedMode::Adopted),
            None => {
                check_holder(interface)?;
                let (link, attached) = programs.attach_xdp(interface, mode)?;
                (programs.pin_link(link, &xdp_pin)?, attached)
            }
        };
        let egress_pin = format!("egress_{interface}");
        let egress = if replies {
            let adopted = programs
                .adopt::<SchedClassifier, SchedClassifierLink>(EGRESS_PROGRAM_NAME, &egress_pin)?;
            let link = match adopted {
                Some(link) => link,
                None => match programs.attach_egress(interface) {
                    Ok(link) => programs.pin_link(link, &egress_pin)?,
                    Err(err) => {
                        if attached != AttachedMode::Adopted {
                            programs.unpin_link(&xdp_pin)?;
                        }
                        return Err(err);
                    }
                },
            };
            Some(link)
        } else {
            programs.unpin_link(&egress_pin)?;
            None
        };
        Ok(Attachment {
            interface: interface.to_owned(),
            mode: attached,
            _link: link,
            _egress: egress,
        })
    }

    /// Fails with [`DataplaneError::Occupied`], naming the program, when an XDP program
    /// holds `interface` that no link pinned under `pin_root` (any layout version) attached:
    /// not this daemon's, which the attach takes over. Nothing is touched: it only asks.
    pub(super) fn check_free(pin_root: &Path, interface: &str) -> Result<(), DataplaneError> {
        let pin = format!("xdp_{interface}");
        let pinned = read_dir(pin_root)
            .unwrap_or_default()
            .iter()
            .any(|dir| dir.join(&pin).exists());
        if pinned {
            return Ok(());
        }
        check_holder(interface)
    }
}

impl Programs<'_> {
    /// Detaches from every interface not in `interfaces` that an earlier daemon attached to,
    /// and removes pins of other layout versions.
    pub(super) fn release_others(&self, interfaces: &[String]) -> Result<(), DataplaneError> {
        let Some(pins) = self.pins else {
            return Ok(());
        };
        for path in read_dir(&pins.dir)? {
            let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
                continue;
            };
            let interface = name
                .strip_prefix("xdp_")
                .or_else(|| name.strip_prefix("egress_"));
            if let Some(interface) = interface
                && !interfaces.iter().any(|configured| configured == interface)
            {
                tracing::warn!(interface, pin = %path.display(), "no longer configured: detached");
                remove_pin(&path)?;
            }
        }
        pins.remove_stale()
    }

    /// Takes over the link pinned as `file` (in this layout's directory, else in another's),
    /// pointing it at this object's program `program`; `None` when there is none or it is
    /// defunct (its pin is then removed).
    fn adopt<P, L>(
        &mut self,
        program: &'static str,
        file: &str,
    ) -> Result<Option<FdLink>, DataplaneError>
    where
        P: LinkOwner<L>,
        L: TryFrom<FdLink, Error = LinkError>,
        for<'a> &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
    {
        let Some(pins) = self.pins else {
            return Ok(None);
        };
        let candidates: Vec<PathBuf> = std::iter::once(&pins.dir)
            .chain(&pins.stale)
            .map(|dir| dir.join(file))
            .filter(|path| path.exists())
            .collect();
        let own = pins.dir.join(file);
        for path in candidates {
            let owner = program_mut::<P>(self.ebpf, program)?;
            match take_over(owner, &path) {
                Ok(link) if path == own => return Ok(Some(link)),
                Ok(link) => {
                    let pinned = link.pin(&own).map_err(|source| DataplaneError::PinLink {
                        path: own.clone(),
                        source,
                    })?;
                    remove_pin(&path)?;
                    return Ok(Some(FdLink::from(pinned)));
                }
                Err(err) => {
                    let err = DataplaneError::Adopt {
                        path: path.clone(),
                        source: err,
                    };
                    tracing::warn!(
                        error = %crate::error_chain(&err),
                        "a pinned link could not be taken over (its interface may be gone): removed"
                    );
                    remove_pin(&path)?;
                }
            }
        }
        Ok(None)
    }

    /// Pins `link` as `file` when pinning; returns it either way.
    fn pin_link(&self, link: FdLink, file: &str) -> Result<FdLink, DataplaneError> {
        let Some(pins) = self.pins else {
            return Ok(link);
        };
        let path = pins.dir.join(file);
        link.pin(&path)
            .map(FdLink::from)
            .map_err(|source| DataplaneError::PinLink { path, source })
    }

    /// Removes the pin `file` of this layout, if any: the link goes when nothing holds it.
    fn unpin_link(&self, file: &str) -> Result<(), DataplaneError> {
        match self.pins {
            Some(pins) => remove_pin(&pins.dir.join(file)),
            None => Ok(()),
        }
    }

    fn attach_egress(&mut self, interface: &str) -> Result<FdLink, DataplaneError> {
        let tcx = aya::util::KernelVersion::current()
            .is_ok_and(|kernel| kernel >= aya::util::KernelVersion::new(6, 6, 0));
        if !tcx {
            // Before TCX, TC programs hang off a clsact qdisc; it may exist already.
            let _ = aya::programs::tc::qdisc_add_clsact(interface);
        }
        let program = program_mut::<SchedClassifier>(self.ebpf, EGRESS_PROGRAM_NAME)?;
        let attach_error = |source| DataplaneError::AttachEgress {
            interface: interface.to_owned(),
            source,
        };
        let id = program
            .attach(interface, TcAttachType::Egress)
            .map_err(attach_error)?;
        let link = program.take_link(id).map_err(attach_error)?;
        FdLink::try_from(link).map_err(|_| DataplaneError::LinkKind(interface.to_owned()))
    }

    fn attach_xdp(
        &mut self,
        interface: &str,
        mode: AttachMode,
    ) -> Result<(FdLink, AttachedMode), DataplaneError> {
        let attempts: &[AttachedMode] = match mode {
            AttachMode::Auto => &[AttachedMode::Native, AttachedMode::Skb],
            AttachMode::Native => &[AttachedMode::Native],
            AttachMode::Skb => &[AttachedMode::Skb],
        };
        let program = program_mut::<Xdp>(self.ebpf, PROGRAM_NAME)?;
        let attach_error = |source| DataplaneError::Attach {
            interface: interface.to_owned(),
            mode,
            source,
        };
        let mut failure = None;
        for &attempt in attempts {
            let flags = match attempt {
                AttachedMode::Skb => aya::programs::XdpMode::Skb,
                _ => aya::programs::XdpMode::Driver,
            };
            match program.attach(interface, flags) {
                Ok(id) => {
                    let link = program.take_link(id).map_err(attach_error)?;
                    let link = FdLink::try_from(link)
                        .map_err(|_| DataplaneError::LinkKind(interface.to_owned()))?;
                    return Ok((link, attempt));
                }
                Err(err @ ProgramError::UnknownInterface { .. }) => {
                    failure = Some(err);
                    break;
                }
                Err(err) => {
                    if mode == AttachMode::Auto && attempt == AttachedMode::Native {
                        tracing::info!(
                            interface,
                            error = %err,
                            "native XDP unavailable, falling back to skb mode"
                        );
                    }
                    failure = Some(err);
                }
            }
        }
        Err(attach_error(failure.unwrap_or(ProgramError::NotAttached)))
    }
}

/// Opens the link pinned at `path` and points it at `owner` (one atomic update).
fn take_over<P, L>(owner: &mut P, path: &std::path::Path) -> Result<FdLink, AdoptError>
where
    P: LinkOwner<L>,
    L: TryFrom<FdLink, Error = LinkError>,
{
    let pinned = PinnedLink::from_pin(path).map_err(AdoptError::Link)?;
    let link = L::try_from(FdLink::from(pinned)).map_err(AdoptError::Link)?;
    owner.take_over(link)
}

/// A program type whose pinned links this driver takes over.
trait LinkOwner<L> {
    /// Points `link` at this program (one atomic update) and hands the link back.
    fn take_over(&mut self, link: L) -> Result<FdLink, AdoptError>;
}

impl LinkOwner<XdpLink> for Xdp {
    fn take_over(&mut self, link: XdpLink) -> Result<FdLink, AdoptError> {
        let id = self.attach_to_link(link).map_err(AdoptError::Program)?;
        let link = self.take_link(id).map_err(AdoptError::Program)?;
        FdLink::try_from(link).map_err(AdoptError::Link)
    }
}

impl LinkOwner<SchedClassifierLink> for SchedClassifier {
    fn take_over(&mut self, link: SchedClassifierLink) -> Result<FdLink, AdoptError> {
        let id = self.attach_to_link(link).map_err(AdoptError::Program)?;
        let link = self.take_link(id).map_err(AdoptError::Program)?;
        FdLink::try_from(link).map_err(AdoptError::Link)
    }
}

/// Fails with [`DataplaneError::Occupied`] when an XDP program holds `interface`: the
/// program's id and mode from rtnetlink, its name when this process may read it (listing
/// programs needs `CAP_SYS_ADMIN`, which the packaged service does not have).
fn check_holder(interface: &str) -> Result<(), DataplaneError> {
    let holder_error = |source| DataplaneError::Holder {
        interface: interface.to_owned(),
        source,
    };
    let ifindex =
        nix::net::if_::if_nametoindex(interface).map_err(|errno| holder_error(errno.into()))?;
    let Some(holder) = xdp_holder(ifindex).map_err(holder_error)? else {
        return Ok(());
    };
    let program = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|program| program.id() == holder.id)
        .and_then(|program| program.name_as_str().map(str::to_owned));
    Err(DataplaneError::Occupied {
        interface: interface.to_owned(),
        holder,
        program,
    })
}
