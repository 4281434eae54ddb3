// SPDX-License-Identifier: GPL-2.0

//! The configfs interface: `/sys/kernel/config/tornblk/<name>/` is a device, whose disk is
//! `/dev/tornblk<name>` while `enable` is 1. See `Documentation/block/tornblk.rst`.

use kernel::{
    alloc::flags::GFP_KERNEL,
    configfs::{
        self,
        AttributeOperations, //
    },
    configfs_attrs,
    error::code::{
        EBUSY,
        EINVAL,
        ENODEV, //
    },
    fmt::{
        self,
        Write as _, //
    },
    new_mutex,
    page::PAGE_SIZE,
    prelude::*,
    str::CString,
    sync::{
        Arc,
        Mutex, //
    },
};

use crate::{
    device::{
        Device,
        Snapshot, //
    },
    kernel_ext::block::{
        AtomicLimits,
        Disk,
        DiskConfig, //
    },
    untorn_logic::{
        crash_model::{
            CrashPolicy,
            PowerState, //
        },
        tornblk::{
            self,
            Command,
            Invalid,
            MAX_REQUEST_BYTES, //
        },
    },
};

/// The attributes of a device, as the subsystem's `features` lists them.
const ATTRIBUTES: &str = "enable,size_mib,logical_block_size,atomic_unit_min,atomic_unit_max,\
atomic_max,atomic_boundary,cache_mib,seed,keep,lose,tear,reorder,atomic_as_plain,command,state,\
report,disk\n";

/// What `command` lists.
const COMMANDS: &str = "cut cut_after cut_random disarm power_on\n";

pub(crate) fn subsystem() -> impl PinInit<configfs::Subsystem<Root>, Error> {
    let item_type = configfs_attrs! {
        container: configfs::Subsystem<Root>,
        data: Root,
        child: DeviceConfig,
        attributes: [
            features: 0,
        ],
    };
    configfs::Subsystem::new(c"tornblk", item_type, try_pin_init!(Root {}))
}

/// Formats into a configfs page.
fn show(page: &mut [u8; PAGE_SIZE], args: fmt::Arguments<'_>) -> Result<usize> {
    let mut writer = kernel::str::Formatter::new(page);
    writer.write_fmt(args)?;
    Ok(writer.bytes_written())
}

/// Maps a parse or range error to `EINVAL`.
fn checked<T>(value: core::result::Result<T, Invalid>) -> Result<T> {
    value.map_err(|_| EINVAL)
}

/// The root of the subsystem.
#[pin_data]
pub(crate) struct Root {}

#[vtable]
impl AttributeOperations<0> for Root {
    type Data = Root;

    fn show(_this: &Root, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        show(page, fmt!("{ATTRIBUTES}"))
    }
}

#[vtable]
impl configfs::GroupOperations for Root {
    type Child = DeviceConfig;

    fn make_group(
        &self,
        name: &CStr,
    ) -> Result<impl PinInit<configfs::Group<DeviceConfig>, Error>> {
        checked(tornblk::check_name(name.to_bytes()))?;
        let item_type = configfs_attrs! {
            container: configfs::Group<DeviceConfig>,
            data: DeviceConfig,
            attributes: [
                enable: 0,
                size_mib: 1,
                logical_block_size: 2,
                atomic_unit_min: 3,
                atomic_unit_max: 4,
                atomic_max: 5,
                atomic_boundary: 6,
                cache_mib: 7,
                seed: 8,
                keep: 9,
                lose: 10,
                tear: 11,
                reorder: 12,
                atomic_as_plain: 13,
                command: 14,
                state: 15,
                report: 16,
                disk: 17,
            ],
        };
        let disk_name = CString::try_from_fmt(fmt!(
            "{}{}",
            tornblk::DISK_PREFIX,
            name.to_str().map_err(|_| EINVAL)?
        ))?;
        let device = Arc::pin_init(Device::new(), GFP_KERNEL)?;
        Ok(configfs::Group::new(
            name.try_into()?,
            item_type,
            try_pin_init!(DeviceConfig {
                disk_name,
                device,
                setup <- new_mutex!(Setup::DEFAULT),
            }),
        ))
    }
}

/// The shape of a device, fixed while its disk exists.
struct Setup {
    size_mib: u64,
    logical_block_size: u32,
    atomic_unit_min: u32,
    atomic_unit_max: u32,
    atomic_max: u32,
    atomic_boundary: u32,
    cache_mib: u32,
    disk: Option<Disk<Device>>,
}

impl Setup {
    /// 256 MiB of 4 KiB blocks, 4 KiB to 64 KiB atomic writes, an 8 MiB cache.
    const DEFAULT: Self = Self {
        size_mib: 256,
        logical_block_size: 4096,
        atomic_unit_min: 4096,
        atomic_unit_max: 65536,
        atomic_max: 65536,
        atomic_boundary: 0,
        cache_mib: 8,
        disk: None,
    };

    /// The disk's shape, if the settings are consistent.
    fn disk_config(&self) -> Result<DiskConfig> {
        let atomic = if self.atomic_unit_min == 0 {
            None
        } else {
            Some(AtomicLimits::new(
                self.logical_block_size,
                self.atomic_unit_min,
                self.atomic_unit_max,
                self.atomic_max,
                self.atomic_boundary,
            )?)
        };
        Ok(DiskConfig {
            capacity_sectors: checked(tornblk::check_size_mib(self.size_mib))? << 11,
            logical_block_size: checked(tornblk::check_logical_block_size(
                self.logical_block_size,
            ))?,
            max_hw_sectors: MAX_REQUEST_BYTES >> 9,
            write_cache: true,
            atomic,
        })
    }
}

/// A device's configfs directory.
#[pin_data]
pub(crate) struct DeviceConfig {
    disk_name: CString,
    device: Arc<Device>,
    #[pin]
    setup: Mutex<Setup>,
}

impl DeviceConfig {
    /// Changes a setting of the shape, which only a device without a disk may do.
    fn change_setup(&self, change: impl FnOnce(&mut Setup)) -> Result {
        let mut setup = self.setup.lock();
        if setup.disk.is_some() {
            return Err(EBUSY);
        }
        change(&mut setup);
        Ok(())
    }

    /// Makes or removes the disk.
    fn enable(&self, on: bool) -> Result {
        let mut setup = self.setup.lock();
        if on && setup.disk.is_none() {
            let config = setup.disk_config()?;
            let cache_bytes = u64::from(checked(tornblk::check_cache_mib(setup.cache_mib))?) << 20;
            self.device.start(config.capacity_sectors, cache_bytes)?;
            match Disk::new(&self.disk_name, &config, self.device.clone()) {
                Ok(disk) => setup.disk = Some(disk),
                Err(e) => {
                    self.device.stop();
                    return Err(e);
                }
            }
        } else if !on {
            if let Some(disk) = setup.disk.take() {
                // Deleting the disk waits for its requests, which take the device's lock only.
                drop(disk);
                self.device.stop();
            }
        }
        Ok(())
    }

    /// Runs a power command.
    fn command(&self, command: Command) -> Result {
        let setup = self.setup.lock();
        let disk = setup.disk.as_ref().ok_or(ENODEV)?;
        self.device.command(command)?;
        if command == Command::PowerOn {
            // As after a reboot, nothing cached from before the cut may be read.
            disk.invalidate_page_cache();
        }
        Ok(())
    }
}

/// An attribute of the shape: a number, checked by `$check` when written.
macro_rules! setup_attribute {
    ($id:literal, $field:ident, $parse:path, $check:path) => {
        #[vtable]
        impl AttributeOperations<$id> for DeviceConfig {
            type Data = DeviceConfig;

            fn show(this: &DeviceConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
                show(page, fmt!("{}\n", this.setup.lock().$field))
            }

            fn store(this: &DeviceConfig, page: &[u8]) -> Result {
                let value = checked($parse(page).and_then($check))?;
                this.change_setup(|setup| setup.$field = value)
            }
        }
    };
}

setup_attribute!(1, size_mib, tornblk::parse_u64, tornblk::check_size_mib);
setup_attribute!(
    2,
    logical_block_size,
    tornblk::parse_u32,
    tornblk::check_logical_block_size
);
setup_attribute!(
    3,
    atomic_unit_min,
    tornblk::parse_u32,
    tornblk::check_atomic_bytes
);
setup_attribute!(
    4,
    atomic_unit_max,
    tornblk::parse_u32,
    tornblk::check_atomic_bytes
);
setup_attribute!(
    5,
    atomic_max,
    tornblk::parse_u32,
    tornblk::check_atomic_bytes
);
setup_attribute!(
    6,
    atomic_boundary,
    tornblk::parse_u32,
    tornblk::check_atomic_bytes
);
setup_attribute!(7, cache_mib, tornblk::parse_u32, tornblk::check_cache_mib);

/// A weight of the crash policy.
macro_rules! weight_attribute {
    ($id:literal, $getter:ident, |$p:ident, $w:ident| $new:expr) => {
        #[vtable]
        impl AttributeOperations<$id> for DeviceConfig {
            type Data = DeviceConfig;

            fn show(this: &DeviceConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
                show(page, fmt!("{}\n", this.device.policy().$getter()))
            }

            fn store(this: &DeviceConfig, page: &[u8]) -> Result {
                let $w = u16::try_from(checked(tornblk::parse_u64(page))?).map_err(|_| EINVAL)?;
                this.device.set_policy(|$p: CrashPolicy| {
                    let weights = $new.map_err(|_| EINVAL)?;
                    Ok(weights
                        .with_reorder($p.reorder())
                        .with_atomic_as_plain($p.atomic_as_plain()))
                })
            }
        }
    };
}

weight_attribute!(9, keep, |p, w| CrashPolicy::new(w, p.lose(), p.tear()));
weight_attribute!(10, lose, |p, w| CrashPolicy::new(p.keep(), w, p.tear()));
weight_attribute!(11, tear, |p, w| CrashPolicy::new(p.keep(), p.lose(), w));

#[vtable]
impl AttributeOperations<0> for DeviceConfig {
    type Data = DeviceConfig;

    fn show(this: &DeviceConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        let on = this.setup.lock().disk.is_some();
        show(page, fmt!("{}\n", u8::from(on)))
    }

    fn store(this: &DeviceConfig, page: &[u8]) -> Result {
        this.enable(checked(tornblk::parse_bool(page))?)
    }
}

#[vtable]
impl AttributeOperations<8> for DeviceConfig {
    type Data = DeviceConfig;

    fn show(this: &DeviceConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        show(page, fmt!("{}\n", this.device.snapshot().seed))
    }

    fn store(this: &DeviceConfig, page: &[u8]) -> Result {
        this.device.set_seed(checked(tornblk::parse_u64(page))?);
        Ok(())
    }
}

#[vtable]
impl AttributeOperations<12> for DeviceConfig {
    type Data = DeviceConfig;

    fn show(this: &DeviceConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        show(page, fmt!("{}\n", u8::from(this.device.policy().reorder())))
    }

    fn store(this: &DeviceConfig, page: &[u8]) -> Result {
        let on = checked(tornblk::parse_bool(page))?;
        this.device.set_policy(|p| Ok(p.with_reorder(on)))
    }
}

#[vtable]
impl AttributeOperations<13> for DeviceConfig {
    type Data = DeviceConfig;

    fn show(this: &DeviceConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        let on = this.device.policy().atomic_as_plain();
        show(page, fmt!("{}\n", u8::from(on)))
    }

    fn store(this: &DeviceConfig, page: &[u8]) -> Result {
        let on = checked(tornblk::parse_bool(page))?;
        this.device.set_policy(|p| Ok(p.with_atomic_as_plain(on)))
    }
}

#[vtable]
impl AttributeOperations<14> for DeviceConfig {
    type Data = DeviceConfig;

    fn show(_this: &DeviceConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        show(page, fmt!("{COMMANDS}"))
    }

    fn store(this: &DeviceConfig, page: &[u8]) -> Result {
        this.command(checked(Command::parse(page))?)
    }
}

/// The power state, as `state` and the first line of `report` show it.
struct ShowState<'a>(&'a Snapshot);

impl fmt::Display for ShowState<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.0.enabled {
            return f.write_str("disabled");
        }
        match self.0.power {
            PowerState::Running => f.write_str("running"),
            PowerState::CutPending { remaining } => write!(f, "armed {remaining}"),
            PowerState::Off => f.write_str("off"),
        }
    }
}

#[vtable]
impl AttributeOperations<15> for DeviceConfig {
    type Data = DeviceConfig;

    fn show(this: &DeviceConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        let snapshot = this.device.snapshot();
        show(page, fmt!("{}\n", ShowState(&snapshot)))
    }
}

#[vtable]
impl AttributeOperations<16> for DeviceConfig {
    type Data = DeviceConfig;

    fn show(this: &DeviceConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        let s = this.device.snapshot();
        let cut = s.last_cut.unwrap_or_default();
        let r = &cut.report;
        let st = &s.stats;
        show(
            page,
            fmt!(
                "state {}\ncuts {}\ncut_seed {}\ncut_pending_writes {}\nwrites_durable {}\n\
                 writes_kept {}\nwrites_lost {}\nwrites_torn {}\nsectors_torn {}\n\
                 reads {}\nwrites {}\natomic_writes {}\nfua_writes {}\nflushes {}\n\
                 implicit_flushes {}\npending_writes {}\npending_bytes {}\n",
                ShowState(&s),
                st.cuts,
                cut.seed,
                cut.pending,
                cut.durable,
                r.writes_kept,
                r.writes_lost,
                r.writes_torn,
                r.sectors_torn,
                st.reads,
                st.writes,
                st.atomic_writes,
                st.fua_writes,
                st.flushes,
                st.implicit_flushes,
                s.pending_writes,
                s.pending_bytes,
            ),
        )
    }
}

#[vtable]
impl AttributeOperations<17> for DeviceConfig {
    type Data = DeviceConfig;

    fn show(this: &DeviceConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        if this.setup.lock().disk.is_some() {
            show(
                page,
                fmt!("{}\n", this.disk_name.to_str().map_err(|_| EINVAL)?),
            )
        } else {
            Ok(0)
        }
    }
}
