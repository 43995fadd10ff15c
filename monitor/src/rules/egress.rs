//! Destinations that are findings unless a profile names them exactly.

use std::net::IpAddr;

/// Cloud instance metadata services: credentials for the machine's cloud identity.
pub const METADATA_ENDPOINTS: &[&str] = &[
    "169.254.169.254", // AWS, GCP (metadata.google.internal), Azure, OpenStack
    "fd00:ec2::254",   // AWS over IPv6
    "169.254.170.2",   // AWS ECS task credentials
    "100.100.100.200", // Alibaba Cloud
];

pub fn is_metadata_endpoint(address: IpAddr) -> bool {
    let address = address.to_canonical();
    METADATA_ENDPOINTS
        .iter()
        .any(|m| m.parse::<IpAddr>().ok() == Some(address))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_endpoints_in_both_families() {
        assert!(is_metadata_endpoint("169.254.169.254".parse().unwrap()));
        assert!(is_metadata_endpoint(
            "::ffff:169.254.169.254".parse().unwrap()
        ));
        assert!(is_metadata_endpoint("fd00:ec2::254".parse().unwrap()));
        assert!(!is_metadata_endpoint("169.254.169.253".parse().unwrap()));
    }
}
