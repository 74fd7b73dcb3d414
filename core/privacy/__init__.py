"""Customer-information protection (保险行业客户信息管理制度; 服务人员规范 IV; PIPL).

Encryption of personal fields at rest (:mod:`core.privacy.keys`, :mod:`core.privacy.crypto`,
:mod:`core.privacy.fields`), masking by role and purpose (:mod:`core.privacy.masking`,
:mod:`core.privacy.purposes`), consent (:mod:`core.privacy.consent`), data-subject requests,
sharing agreements, retention and the privacy report. See docs/privacy.md.
"""
