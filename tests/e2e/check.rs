//! `approval-bridge check` against the real gateway and the fake Bot API: it passes on a
//! good config and names every problem, with its fix, on a bad one.

use testkit::bridge::{BridgeProcess, BridgeSetup};
use testkit::fake_telegram::FakeTelegram;
use testkit::openclaw::{Gateway, GatewayConfig};

const OWNER: i64 = 111_111_111;

fn exe() -> &'static std::path::Path {
    env!("CARGO_BIN_EXE_approval-bridge").as_ref()
}

#[tokio::test(flavor = "multi_thread")]
async fn check_passes_on_a_good_config_and_names_each_problem_otherwise() {
    let (gw, tg) = tokio::join!(
        Gateway::start(GatewayConfig::default()),
        FakeTelegram::start("123:good")
    );
    let gw = gw.expect("start the OpenClaw gateway");

    let good =
        BridgeProcess::configure(exe(), BridgeSetup::telegram_owner(&gw, &tg, OWNER)).unwrap();
    let (ok, out) = good.check().await.unwrap();
    assert!(ok, "{out}");
    assert!(
        out.contains("operator.admin") && out.contains("all checks passed"),
        "{out}"
    );
    assert!(
        out.contains("telegram") && out.contains("1 target(s)"),
        "{out}"
    );

    let mut bad = BridgeSetup::telegram_owner(&gw, &tg, OWNER);
    bad.gateway_token = "not-the-gateway-token".into();
    bad.bot_token = "123:wrong".into();
    let bad = BridgeProcess::configure(exe(), bad).unwrap();
    let (ok, out) = bad.check().await.unwrap();
    assert!(!ok, "{out}");
    assert!(
        out.contains("PROBLEM  gateway: cannot connect") && out.contains("gateway.token"),
        "{out}"
    );
    assert!(
        out.contains("PROBLEM  telegram") && out.contains("telegram.bot_token"),
        "{out}"
    );
    assert!(out.contains("2 problem(s) found"), "{out}");
    for secret in ["not-the-gateway-token", "123:wrong", gw.token()] {
        assert!(!out.contains(secret), "check printed a secret: {out}");
    }
}

#[tokio::test]
async fn check_names_a_missing_secret_without_connecting() {
    let tg = FakeTelegram::start("123:good").await;
    let setup = BridgeSetup {
        gateway_url: "ws://127.0.0.1:9".into(),
        gateway_token: String::new(),
        telegram_api_url: tg.url(),
        bot_token: "123:good".into(),
        allow_from: vec![OWNER],
        targets: None,
        extra_toml: String::new(),
        env: Vec::new(),
    };
    let (ok, out) = BridgeProcess::configure(exe(), setup)
        .unwrap()
        .check()
        .await
        .unwrap();
    assert!(!ok);
    assert!(
        out.contains("gateway.token") && out.contains("AB_TEST_GATEWAY_TOKEN"),
        "{out}"
    );
}
