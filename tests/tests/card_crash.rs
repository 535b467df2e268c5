//! Kill the simulator (SIGKILL) in the middle of PUT DATA, restart it: the card holds either
//! the old or the new object, never a torn one, and the state file always loads.
//!
//! The simulator runs with a hidden `--persist-pause-ms` that sleeps halfway through writing
//! its state file, so most kills land mid-write.

use std::time::{Duration, Instant};

use cps_card::{ManagementKey, Pcsc, Piv};
use cps_trust_tests::pcsc::{PcscStack, blank_card, child_env, firmware_sim_bin};
use cps_trust_tests::{assert_success, text};

const NAME: &str = "kill_during_put_data_leaves_old_or_new_state";
const TAG: u32 = 0x5FC10B;
const SIZE: usize = 700;

fn object(version: u32) -> Vec<u8> {
    let mut v = version.to_be_bytes().to_vec();
    v.resize(SIZE, version as u8);
    let mut o = vec![0x70, 0x82, (SIZE >> 8) as u8, SIZE as u8];
    o.extend(v);
    o
}

/// Decodes an object written by `object`; None if torn.
fn version_of(o: &[u8]) -> Option<u32> {
    if o.len() != SIZE + 4 || o[..4] != [0x70, 0x82, (SIZE >> 8) as u8, SIZE as u8] {
        return None;
    }
    let v = u32::from_be_bytes([o[4], o[5], o[6], o[7]]);
    o[8..].iter().all(|&b| b == v as u8).then_some(v)
}

fn child() {
    let reader = std::env::var("CARD_READER").unwrap();
    let ack = std::env::var("ACK_FILE").unwrap();
    let pcsc = Pcsc::establish().unwrap();
    pcsc.wait_for_card(&reader, Duration::from_secs(10))
        .unwrap();
    let mut piv = Piv::select(pcsc.connect(&reader).unwrap()).unwrap();
    match std::env::var("STEP").unwrap().as_str() {
        "write" => {
            let start: u32 = std::env::var("START").unwrap().parse().unwrap();
            piv.authenticate(&ManagementKey::default_aes192()).unwrap();
            let mut v = start;
            loop {
                // Any error means the simulator died under us: stop, report the last ack.
                if piv.write_object(TAG, &object(v)).is_err() {
                    break;
                }
                std::fs::write(&ack, v.to_string()).unwrap();
                v += 1;
                if v > start + 10_000 {
                    break;
                }
            }
        }
        "read" => {
            let o = piv.read_object(TAG).unwrap();
            let v = match o {
                None => "none".to_string(),
                Some(o) => version_of(&o)
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "TORN".into()),
            };
            std::fs::write(&ack, v).unwrap();
        }
        s => panic!("step {s}"),
    }
}

#[test]
fn kill_during_put_data_leaves_old_or_new_state() {
    if child_env(NAME).is_some() {
        return child();
    }
    let stack = PcscStack::start("crash");
    let dir = stack.dir.path().to_path_buf();
    let card = dir.join("card.json");
    blank_card(&card);
    let ack = dir.join("ack");
    let vars = |step: &str, start: u32| {
        vec![
            ("CARD_READER", stack.reader(0)),
            ("ACK_FILE", ack.display().to_string()),
            ("STEP", step.to_string()),
            ("START", start.to_string()),
        ]
    };
    let mut next = 1u32;
    let mut mid_write_kills = 0;
    for round in 0..4 {
        let mut sim = stack.simulator(&[(0, &card)], &["--persist-pause-ms", "25"]);
        let _ = std::fs::remove_file(&ack);
        let writer = stack.spawn_child(NAME, &vars("write", next));
        // let some writes complete, then kill at a moment that varies per round
        let t0 = Instant::now();
        while !ack.exists() && t0.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(ack.exists(), "no PUT DATA acknowledged in round {round}");
        std::thread::sleep(Duration::from_millis(150 + 97 * round as u64));
        sim.kill9();
        let tmp = dir.join("card.json.tmp");
        if tmp.exists() {
            mid_write_kills += 1;
        }
        let out = writer.wait_with_output().unwrap();
        assert_success(&out, "writer child");
        let acked: u32 = std::fs::read_to_string(&ack)
            .unwrap()
            .trim()
            .parse()
            .unwrap();

        // pcscd polls presence every 400 ms: let it see the card gone before a new one comes
        std::thread::sleep(Duration::from_millis(1200));
        // the state file loads (firmware-sim refuses a corrupt one)
        let out = std::process::Command::new(firmware_sim_bin())
            .args(["show", "--state"])
            .arg(&card)
            .output()
            .unwrap();
        assert_success(&out, "firmware-sim show after kill -9");

        // restart and read through pcscd: old (acked) or new (in flight), never torn
        let sim = stack.simulator(&[(0, &card)], &[]);
        let _ = std::fs::remove_file(&ack);
        stack.run_child(NAME, &vars("read", 0));
        let seen = std::fs::read_to_string(&ack).unwrap();
        let v: u32 = seen
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("round {round}: object is {seen}"));
        assert!(
            v == acked || v == acked + 1,
            "round {round}: acked {acked}, card holds {v}"
        );
        eprintln!(
            "round {round}: acked {acked}, card holds {v}, {}",
            text(&out.stdout).lines().next().unwrap_or("")
        );
        drop(sim);
        std::thread::sleep(Duration::from_millis(1200));
        next = v + 1;
    }
    eprintln!("{mid_write_kills} of 4 kills landed in the middle of a state-file write");
    assert!(
        mid_write_kills >= 1,
        "no kill landed mid-write: the test did not exercise the crash window"
    );
}
