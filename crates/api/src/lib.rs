#![doc = include_str!("../README.md")]

pub mod auth;
pub mod body;
pub mod error;
pub mod headers;
mod limit;
mod methods;
mod metrics;
pub mod observe;
pub mod openapi;
mod pages;
mod public;
mod ready;
mod routes;
mod seal;
mod server;
mod state;
mod time;

pub use server::{Options, Running, start};
pub use state::ApiState;
