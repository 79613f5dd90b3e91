//! OMS
