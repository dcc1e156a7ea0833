# Install rules (GNUInstallDirs), included at the end of the top-level CMakeLists.txt once
# every target exists. `cmake --install <build> [--prefix P]` installs:
#   bin/kmsd, bin/kmsctl                              ${CMAKE_INSTALL_BINDIR}
#   lib/systemd/system/kmsd.service                   KMS_INSTALL_SYSTEMDUNITDIR
#   lib/sysusers.d/kmsd.conf                          KMS_INSTALL_SYSUSERSDIR
#   share/doc/kmsd/*.md (README.md and docs/*.md)     ${CMAKE_INSTALL_DOCDIR}
#   share/doc/kmsd/examples/kmsd.json, kmsd.logrotate example config and log rotation
# The unit, the sysusers entry and the docs examples are what docs/operations.md ("systemd")
# copies by hand. Config and logrotate files go to examples/ and not to /etc: an install must
# never overwrite an edited /etc/kmsd/kmsd.json.
include(GNUInstallDirs)

# systemd reads units and sysusers entries under /usr/lib and /usr/local/lib (never the
# multiarch ${CMAKE_INSTALL_LIBDIR}), so these are plain prefix-relative paths.
set(KMS_INSTALL_SYSTEMDUNITDIR "lib/systemd/system" CACHE STRING
    "systemd unit directory, relative to the install prefix")
set(KMS_INSTALL_SYSUSERSDIR "lib/sysusers.d" CACHE STRING
    "systemd-sysusers directory, relative to the install prefix")

install(TARGETS kmsd kmsctl RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

# The unit names /usr/local/bin/kmsd; point it at the configured binary directory.
file(READ ${CMAKE_SOURCE_DIR}/deploy/systemd/kmsd.service _kms_unit)
string(REPLACE "/usr/local/bin/kmsd" "${CMAKE_INSTALL_FULL_BINDIR}/kmsd" _kms_unit
       "${_kms_unit}")
file(CONFIGURE OUTPUT ${CMAKE_BINARY_DIR}/deploy/kmsd.service CONTENT "${_kms_unit}"
     @ONLY)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
             ${CMAKE_SOURCE_DIR}/deploy/systemd/kmsd.service)
# ... and again at install time: `cmake --install build --prefix /usr` installs the binary in
# /usr/bin, so the unit must name that, not the configured /usr/local/bin. (DESTDIR staging
# leaves CMAKE_INSTALL_PREFIX alone, as it should.)
if(IS_ABSOLUTE "${CMAKE_INSTALL_BINDIR}")
  set(_kms_bindir_code "set(_kms_bindir \"${CMAKE_INSTALL_BINDIR}\")")
else()
  set(_kms_bindir_code
      "set(_kms_bindir \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_BINDIR}\")")
endif()
install(CODE "
  ${_kms_bindir_code}
  file(READ \"${CMAKE_SOURCE_DIR}/deploy/systemd/kmsd.service\" _kms_unit)
  string(REPLACE \"/usr/local/bin/kmsd\" \"\${_kms_bindir}/kmsd\" _kms_unit \"\${_kms_unit}\")
  file(WRITE \"${CMAKE_BINARY_DIR}/deploy/kmsd.service\" \"\${_kms_unit}\")
")
install(FILES ${CMAKE_BINARY_DIR}/deploy/kmsd.service
        DESTINATION ${KMS_INSTALL_SYSTEMDUNITDIR})
install(FILES deploy/systemd/kmsd.sysusers DESTINATION ${KMS_INSTALL_SYSUSERSDIR}
        RENAME kmsd.conf)

install(FILES README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(DIRECTORY docs/ DESTINATION ${CMAKE_INSTALL_DOCDIR} FILES_MATCHING PATTERN "*.md")
install(FILES deploy/systemd/kmsd.json deploy/systemd/kmsd.logrotate
        DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)

# `ctest -L install`: install into a fresh directory and check the layout above.
if(BUILD_TESTING OR NOT DEFINED BUILD_TESTING)
  add_test(NAME install_layout
           COMMAND ${CMAKE_SOURCE_DIR}/scripts/check-install.sh ${CMAKE_BINARY_DIR})
  set_tests_properties(install_layout PROPERTIES LABELS install TIMEOUT 120)
endif()
