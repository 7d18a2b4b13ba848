//! End-to-end tests: the real OpenClaw gateway (testkit::openclaw) and chat services
//! faked at their wire API on 127.0.0.1. One test binary keeps link time down.

mod agent;
mod alerts;
mod attacks;
mod chat_faults;
mod check;
mod clock;
mod daemon;
mod discord;
mod faults;
mod gateway;
mod history;
mod matrix;
mod missed;
mod reach;
mod secrets;
mod slack;
mod storage_faults;
mod telegram;
mod trust;
