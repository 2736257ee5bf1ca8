#![doc = include_str!("../README.md")]

pub mod keys;
pub mod tasks;
