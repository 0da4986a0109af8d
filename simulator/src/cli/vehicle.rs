//! `ecu-sim serve --vehicle FILE`: the ECUs of a vehicle file behind one DoIP gateway, each
//! with its state in `STATE/NAME`, in real time until SIGINT/SIGTERM.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};

use super::ecu::{ecu_config, keyring};
use super::serve::{HostSpec, host, serve_hosts};
use crate::exit;
use crate::flash::Geometry;
use crate::host::Pace;
use crate::proto::doip;
use crate::serve::{DoipEndpoint, Routes, Served};
use crate::vehicle::{Vehicle, VehicleEcu};

/// Serves the vehicle of `file` on `addr` until SIGINT/SIGTERM, then saves every ECU.
pub fn run(file: &Path, addr: SocketAddr, state: &Path, speed: Pace) -> Result<exit::Code> {
    let vehicle = Vehicle::load(file)?;
    let mut hosts = Vec::new();
    for ecu in &vehicle.ecus {
        let dir = state.join(&ecu.name);
        hosts.push(ecu_host(ecu, &dir, vehicle.vin).with_context(|| format!("ecu {}", ecu.name))?);
    }
    let mut entity = doip::EntityInfo {
        logical_address: vehicle.gateway_address,
        vin: vehicle.vin,
        node_type: doip::NodeType::Gateway,
        max_sockets: 4,
        ..doip::EntityInfo::default()
    };
    entity.max_data_size = Some(doip::DEFAULT_MAX_PAYLOAD + doip::HEADER_LEN as u32);
    let endpoint = DoipEndpoint { addr, entity };
    serve_hosts(hosts, speed, |handles| async move {
        let ecus: BTreeMap<u16, _> = vehicle
            .ecus
            .iter()
            .map(|e| e.logical_address)
            .zip(handles)
            .collect();
        let functional = doip::Config::default().functional_addresses;
        let routes = Routes::new(ecus, functional).context("a vehicle without ECUs")?;
        let served = Served::start_gateway(&endpoint, routes).await?;
        let mut lines: Vec<String> = served.endpoints.iter().map(ToString::to_string).collect();
        for e in &vehicle.ecus {
            lines.push(format!(
                "ecu {} at logical address 0x{:04x} ({}), state {}",
                e.name,
                e.logical_address,
                e.boot_mode.name(),
                state.join(&e.name).display()
            ));
        }
        Ok((served, lines))
    })
}

/// The host of one of the vehicle's ECUs.
fn ecu_host(
    ecu: &VehicleEcu,
    dir: &Path,
    vin: [u8; 17],
) -> Result<crate::host::Host<crate::flash::FileFlash>> {
    let geometry = Geometry::uniform(ecu.sector_size, ecu.sectors, ecu.align)?;
    let config = ecu_config(
        &geometry,
        ecu.boot_mode,
        keyring(&ecu.keys, &ecu.dev_keys)?,
        ecu.enc_key.as_deref(),
        ecu.max_boot_attempts,
    )?;
    host(HostSpec {
        state: dir,
        factory: ecu.factory.as_deref(),
        geometry,
        config,
        block_len: ecu.block_len,
        seed: ecu.seed,
        vin: Some(vin),
    })
}
