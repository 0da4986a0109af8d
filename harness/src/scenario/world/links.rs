//! The links around the simulated ECU: what the world does to each UDS request and response
//! (on CAN: the ISO-TP exchange over the virtual bus of `canlink.rs`, frame faults included;
//! injected NRCs and responsePending storms, corrupted or
//! dropped requests) and to each download chunk (the artifact server's faults).

use super::canlink::{CanLink, Note, RequestOutcome};
use super::{Step, World};
use crate::download::DownloadEvent;
use crate::ota::live::Progress;
use crate::ota::sim::{ChunkFate, Hooks, RequestFate, SimEcu};
use crate::scenario::engine::Observation;
use crate::scenario::schema::{Action, CanFault, Client, DownloadFault};
use crate::scenario::trace::Source;

/// The interval of injected responsePending answers.
const PENDING_INTERVAL_US: u64 = 2_000_000;

impl World {
    /// Push what the CAN link reports to the trace.
    fn can_notes(&mut self, notes: Vec<Note>) {
        for n in notes {
            self.push(n.at_us, Source::Fault, n.event, n.text);
        }
    }

    /// The CAN exchange is over: a fault whose frame did not occur did nothing (it did not
    /// fire).
    fn can_finish(&mut self, now: u64) {
        let Some((fault, why)) = self.can.as_mut().and_then(CanLink::finish) else {
            return;
        };
        let action = Action::Can(fault);
        let hit = self
            .scenario
            .faults
            .iter()
            .enumerate()
            .rev()
            .find(|(i, f)| f.action == action && self.engine.fired()[*i] > 0)
            .map(|(i, _)| i);
        if let Some(i) = hit {
            self.push(
                now,
                Source::Fault,
                "can_fault_idle",
                format!("the CAN fault of fault {} did nothing: {why}", i + 1),
            );
            self.engine.did_nothing(i, why);
        }
    }
}

impl Hooks for World {
    fn on_request(&mut self, sim: &mut SimEcu, now: u64, request: &mut Vec<u8>) -> RequestFate {
        let index = self.requests + 1;
        self.begin_step(
            sim,
            now,
            Step::Request {
                bytes: request.clone(),
                index,
            },
        );
        self.requests = index;
        self.observe(sim, now);
        let Some(&sid) = request.first() else {
            return RequestFate::Lost;
        };
        let mut actions = self.fire(now, Observation::Request { index, sid });
        if sid == 0x34 {
            self.blocks_sent = 0;
            self.download_size = request_download_size(request);
        }
        if sid == 0x36 {
            self.blocks_sent += 1;
            // With no manager to report the transfer's length in blocks (an external
            // client), it is the memory size over the first block's data length.
            if self.blocks_sent == 1
                && matches!(self.scenario.client, Client::External(_))
                && let Some(size) = self.download_size
                && request.len() > 2
            {
                let per = (request.len() - 2) as u64;
                self.blocks_total = u32::try_from(size.div_ceil(per)).unwrap_or(u32::MAX);
            }
            let (n, of) = (self.blocks_sent, self.blocks_total.max(1));
            actions.extend(self.fire(now, Observation::TransferBlock { n, of }));
        }
        self.apply(sim, now, actions);
        if !sim.ecu.is_powered() {
            // Nobody home: the request is lost (the tester times out).
            return RequestFate::Lost;
        }
        if std::mem::take(&mut self.drop_next) {
            self.push(
                now,
                Source::Fault,
                "connection_dropped",
                "the ECU closed the connection",
            );
            return RequestFate::Closed;
        }
        if sid == 0x36
            && let Some(mask) = self.flip_next_block.take()
            && request.len() > 2
        {
            request[2] ^= mask;
        }
        let sub = request.get(1).copied();
        if let Some(k) = self
            .corrupt
            .iter()
            .position(|(s, f, n)| *s == sid && f.is_none_or(|f| Some(f) == sub) && *n > 0)
        {
            self.corrupt[k].2 -= 1;
            self.push(
                now,
                Source::Fault,
                "request_corrupted",
                format!("the last byte of a request to {sid:#04x} arrives inverted"),
            );
            if let Some(last) = request.last_mut() {
                *last ^= 0xFF;
            }
        }
        if let Some(k) = self.nrc.iter().position(|(s, _, n)| *s == sid && *n > 0) {
            self.nrc[k].2 -= 1;
            let nrc = self.nrc[k].1;
            return RequestFate::Answer(vec![(now + 1_000, vec![0x7F, sid, nrc])]);
        }
        let mut after_us = 0;
        let mut sent_us = 0;
        if let Some(can) = &mut self.can {
            let fault = self.can_next.pop_front();
            let mut notes = Vec::new();
            let outcome = can.request(now, request, fault, &mut notes);
            self.can_notes(notes);
            match outcome {
                RequestOutcome::Delivered { at_us, sent_us: s } => {
                    after_us = at_us - now;
                    sent_us = s - now;
                }
                RequestOutcome::Lost { sent_us } => {
                    return RequestFate::Sent {
                        us: sent_us - now,
                        fate: Box::new(RequestFate::Lost),
                    };
                }
                RequestOutcome::SendFailed { at_us, error } => {
                    return RequestFate::SendFailed {
                        after_us: at_us - now,
                        error,
                    };
                }
            }
        } else if let Some(f) = self.can_next.pop_front() {
            // An external client's frames travel on the real slcan pty, out of the world's
            // reach: the short forms validation allows act on the whole request.
            if let CanFault::DelayMs(ms) = f {
                after_us += ms * 1000;
            } else {
                self.push(
                    now,
                    Source::Fault,
                    "can_message_lost",
                    format!(
                        "`can: {}`: the request to {sid:#04x} is lost whole (an external client's frames travel on the real slcan pty)",
                        f.to_yaml_flow()
                    ),
                );
                return RequestFate::Lost;
            }
        }
        let mut held_us = 0;
        if let Some((s, count)) = self.storm
            && s == sid
        {
            self.storm = None;
            self.storm_now = Some((s, count));
            // The ECU has the request and answers responsePending meanwhile: in progress.
            held_us = u64::from(count) * PENDING_INTERVAL_US;
        }
        let fate = RequestFate::Deliver { after_us, held_us };
        match sent_us {
            0 => fate,
            us => RequestFate::Sent {
                us,
                fate: Box::new(fate),
            },
        }
    }

    fn on_responses(&mut self, now: u64, responses: &mut Vec<(u64, Vec<u8>)>) {
        if let Some((sid, count)) = self.storm_now.take() {
            // The storm's answers go out first, every PENDING_INTERVAL_US.
            for k in 0..u64::from(count) {
                // The first within P2 (10 ms), then one per interval (below P2*).
                responses.push((
                    now + 10_000 + k * PENDING_INTERVAL_US,
                    vec![0x7F, sid, 0x78],
                ));
            }
            self.push(
                now,
                Source::Fault,
                "response_pending_storm",
                format!("{count} responsePending answers to service {sid:#04x}"),
            );
        }
        if let Some(can) = &mut self.can {
            // Each answer over the bus in the order it is due; a lost one never arrives.
            responses.sort_by_key(|(at, _)| *at);
            let mut notes = Vec::new();
            responses.retain_mut(|(at, bytes)| match can.response(*at, bytes, &mut notes) {
                Some(arrived) => {
                    *at = arrived;
                    true
                }
                None => false,
            });
            self.can_notes(notes);
            self.can_finish(now);
        }
    }

    fn after_request(&mut self, sim: &mut SimEcu, now: u64) {
        self.observe(sim, now);
        let n = self.requests;
        let actions = self.fire(now, Observation::Answered { index: n });
        self.apply(sim, now, actions);
        self.observe(sim, now);
        self.end_step(sim);
    }

    fn on_chunk(
        &mut self,
        sim: &mut SimEcu,
        now: u64,
        offset: u64,
        len: usize,
        total: u64,
        first: bool,
    ) -> ChunkFate {
        self.begin_step(sim, now, Step::Chunk { offset });
        self.end_step(sim);
        // (The downloader ends each chunk at the engine's next stop: see `chunk_end`.)
        let fired = self.fire_except(now, Observation::Download { at: offset, total }, &[]);
        let at_offset = fired
            .iter()
            .filter_map(|m| m.at_byte)
            .next_back()
            .map(|b| b.saturating_sub(offset));
        let actions = fired.into_iter().map(|m| m.action).collect();
        self.apply(sim, now, actions);
        match self.download_next.pop_front() {
            None => ChunkFate::Send,
            Some(DownloadFault::Close) => ChunkFate::Close,
            Some(DownloadFault::StallMs(ms)) => ChunkFate::Stall(ms),
            Some(DownloadFault::HttpError(s)) => ChunkFate::Status(s),
            Some(DownloadFault::FlipByte) => {
                ChunkFate::Flip(at_offset.unwrap_or(0).min(len as u64 - 1) as usize)
            }
            Some(DownloadFault::IgnoreRange) if first && offset > 0 => ChunkFate::IgnoreRange,
            Some(DownloadFault::IgnoreRange) => {
                // Applies to the next request that asks for a range.
                self.download_next.push_front(DownloadFault::IgnoreRange);
                ChunkFate::Send
            }
            Some(DownloadFault::Throttle(_)) => ChunkFate::Send,
        }
    }

    fn chunk_end(&mut self, offset: u64, total: u64) -> Option<u64> {
        self.engine.download_stops(offset, total).first().copied()
    }

    fn artifact(&mut self, _url: &str) -> Option<Vec<u8>> {
        self.swapped.clone()
    }

    fn bandwidth(&mut self, configured: u64) -> u64 {
        self.throttle.unwrap_or(configured)
    }

    fn on_download(&mut self, now: u64, what: &Progress) {
        match what {
            Progress::Download(DownloadEvent::Started { resumed: true, .. }) => {
                self.download_resumed = true;
            }
            Progress::Download(DownloadEvent::RestartedFromZero { .. }) => {
                self.download_restarted = true;
            }
            _ => {}
        }
        if let Some((event, text)) = download_event(what) {
            self.push(now, Source::Download, event, text);
        }
    }
}

/// The trace event name and text of what a download did or why an attempt failed; `None`
/// for what is not the download's.
pub fn download_event(what: &Progress) -> Option<(&'static str, String)> {
    match what {
        Progress::Download(e) => {
            let name = match e {
                DownloadEvent::Started { resumed: true, .. } => "download_resumed",
                DownloadEvent::Started { .. } => "download_requested",
                DownloadEvent::RestartedFromZero { .. } => "download_restarted",
                DownloadEvent::Retrying { .. }
                | DownloadEvent::Progress { .. }
                | DownloadEvent::Done { .. } => "download_note",
            };
            Some((name, e.to_string()))
        }
        Progress::DownloadFailed { reason, corrupt } => Some((
            if *corrupt {
                "download_corrupt"
            } else {
                "download_note"
            },
            reason.clone(),
        )),
        Progress::State(_) | Progress::Note(_) | Progress::BootStatus(_) | Progress::Bytes(_) => {
            None
        }
    }
}

/// memorySize of a RequestDownload (`34 dfi alfid address… size…`).
fn request_download_size(req: &[u8]) -> Option<u64> {
    let alfid = *req.get(2)?;
    let (size_len, addr_len) = (usize::from(alfid >> 4), usize::from(alfid & 0x0F));
    let bytes = req.get(3 + addr_len..3 + addr_len + size_len)?;
    (1..=8)
        .contains(&size_len)
        .then(|| bytes.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_download_fields() {
        // 4-byte address, 4-byte size 0x0000A000.
        let req = [0x34, 0x00, 0x44, 0, 0, 0, 0, 0x00, 0x00, 0xA0, 0x00];
        assert_eq!(request_download_size(&req), Some(0xA000));
        assert_eq!(request_download_size(&req[..9]), None);
        assert_eq!(request_download_size(&[0x34, 0x00, 0x04]), None);
    }
}
