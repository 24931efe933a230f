//! UserSig (TLSSigAPIv2): made from the app's secret key, and verified.
